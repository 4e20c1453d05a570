"""Hypervisor drivers behind one interface: a VM spec in, a command line and fds out."""
