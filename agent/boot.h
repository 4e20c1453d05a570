/* PID-1 duties: early mounts, console, kernel modules, signals, the final reboot. */
#ifndef VMPOD_BOOT_H
#define VMPOD_BOOT_H

/* Mounts /dev, /proc, /sys, points stdio at the console and loads /modules.list. PID 1 only. */
void boot_pid1(void);
/* Makes sure fds 0-2 are open, so no later fd lands there (the child's stdio is dup2'ed to 0-2). */
void boot_std_fds(void);
/* Blocks SIGCHLD (read via the returned signalfd) and makes stray signals harmless. */
int boot_signals(void);
/* Kills every other process, syncs and unmounts the container root (PID 1 only). */
void boot_teardown(void);
/* Kills everything, syncs, unmounts the container root and reboots (QEMU -no-reboot: the VM ends). */
_Noreturn void boot_reboot(void);

#endif
