"""What is blocked, watched and allowed: lists, the matcher, user rules, the catalogue, reload."""
