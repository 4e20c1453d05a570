/* See sysfs.h. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "sysfs.h"

int sysfs_read(const char *path, char *buf, size_t cap)
{
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, buf, cap - 1);
    close(f);
    if (n < 0)
        return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        n--;
    buf[n] = 0;
    return 0;
}

int sysfs_open_device(const char *dev, const char *dev_attr)
{
    char value[32];
    unsigned maj, min;
    if (access(dev, F_OK) < 0 && sysfs_read(dev_attr, value, sizeof value) == 0 &&
        sscanf(value, "%u:%u", &maj, &min) == 2)
        mknod(dev, S_IFCHR | 0600, makedev(maj, min));
    return open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
}
