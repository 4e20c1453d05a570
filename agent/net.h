/* The guest's network (PID 1 only): its one namespace is the container's. */
#ifndef VMPOD_NET_H
#define VMPOD_NET_H

#include <stddef.h>
#include "spec.h"

/* Brings lo up and, with n->set, the first ethernet interface with n's address, netmask and default
 * route. 0 or an errno with msg. */
int net_setup(const struct net_spec *n, char *msg, size_t cap);
/* Gives the first ethernet interface (while it is down) this MAC address. 0 or an errno with msg. */
int net_set_mac(const unsigned char mac[6], char *msg, size_t cap);

#endif
