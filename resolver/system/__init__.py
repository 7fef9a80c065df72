"""The host around aidns: doctor, setup-dns, install, hosts and system files, sd_notify, watches."""
