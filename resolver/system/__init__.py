"""The host around aidns: doctor, setup-dns, install, the hosts file, system files, sd_notify."""
