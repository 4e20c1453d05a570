/* Reading sysfs values and opening the character devices they describe (virtio ports, hvc consoles). */
#ifndef VMPOD_SYSFS_H
#define VMPOD_SYSFS_H
#include <stddef.h>

/* The first line of a small file, trailing newline and spaces cut: 0, or -1 if it cannot be read. */
int sysfs_read(const char *path, char *buf, size_t cap);

/* Opens the device node dev (read-write, non-blocking, never as a controlling tty), creating it first
 * from the "MAJOR:MINOR" in dev_attr if devtmpfs has not (yet): an fd, or -1. */
int sysfs_open_device(const char *dev, const char *dev_attr);

#endif
