/* Finding the host channel under Xen: a PV console channel, /dev/hvcN in the guest.
 *
 * Xen's toolstack writes each channel's name to xenstore (device/console/<devid>/name); the guest sees
 * the device as /sys/bus/xen/devices/console-<devid> but the name only through xenstore, which it reads
 * over /dev/xen/xenbus. The hvc driver gives secondary consoles hvc1, hvc2 ... in probe order (devid
 * order), and every hvc1..7 node exists whether or not a console backs it: so the rank of our devid
 * among the console devices picks the node. vmpod declares one real channel (behind a dummy that Xen
 * 4.17 needs first, which the guest never sees), so the rank is 0 and the node /dev/hvc1. */
#ifndef VMPOD_XENCONS_H
#define VMPOD_XENCONS_H

#include <stddef.h>
#include <stdint.h>

#define XS_READ 2u
#define XS_ERROR 16u
#define XS_HEADER_SIZE 16u
#define XS_PAYLOAD_MAX 4096u

/* "console-12" -> 12; -1 for anything else (other devices, junk, overflow). */
int xen_console_devid(const char *name);
/* An XS_READ request for path (NUL included); its length, or 0 when it does not fit in cap. */
size_t xs_read_request(uint8_t *buf, size_t cap, uint32_t req_id, const char *path);
/* A reply in buf[0..n): >= 0, the value's length, copied NUL-terminated into out; XS_SHORT while
 * incomplete; XS_BAD for an error reply, another request's reply, a too long or oversized value. */
enum { XS_SHORT = -1, XS_BAD = -2 };
int xs_parse_reply(const uint8_t *buf, size_t n, uint32_t req_id, char *out, size_t cap);
/* 1 + the rank of devid among devids[0..n) (the hvc index it gets), or -1 if it is not there. */
int xen_hvc_index(const int *devids, size_t n, int devid);

/* Opens the console channel named name as a raw, non-echoing tty; -1 if there is none (yet). */
int xen_channel_open(const char *name);

#endif
