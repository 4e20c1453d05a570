/* START's MOUNTs and FILEs inside the container root (PID 1 only). */
#ifndef VMPOD_MOUNTS_H
#define VMPOD_MOUNTS_H

#include <stddef.h>
#include "container.h"

/* Each MOUNT in order, then each FILE. 0 or an errno with msg naming the failed one. */
int mounts_apply(const struct start_req *r, char *msg, size_t cap);

#endif
