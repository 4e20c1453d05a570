"""The OCI runtime: runc's command line (`vmpod-runtime`) over vmpod's VMs."""
