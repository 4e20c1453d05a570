/* The byte stream to the host: finding the virtio port, framed reads and blocking frame writes. */
#ifndef VMPOD_CHANNEL_H
#define VMPOD_CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include "frame.h"

enum { CHAN_DATA = 1, CHAN_NODATA = 0, CHAN_EOF = -1 };

/* Finds the port named VMPOD_CHANNEL_NAME (retrying ~10 s) and opens it; -1 if never found. */
int chan_find_guest(void);
/* guest: 1 when fd is a virtio port, where EOF/POLLHUP only means "no host connected yet". */
void chan_use(int fd, int guest);
int chan_fd(void);
int chan_is_guest(void);
/* Reads what is available into the frame buffer: CHAN_DATA, CHAN_NODATA or CHAN_EOF. */
int chan_fill(void);
/* Takes the next whole frame from the buffer: FRAME_OK, FRAME_NEED_MORE or FRAME_BAD. The payload
 * stays valid until the next chan_fill. */
int chan_next(struct frame_hdr *h, const uint8_t **payload, const char **why);

/* Writes one whole frame; waits while the channel is full. A lost channel is fatal (die()). */
void chan_send(uint16_t type, uint32_t id, const void *payload, size_t n);
void send_ok(uint32_t id, int with_pid, uint32_t pid);
void send_error(uint32_t id, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void send_u32(uint16_t type, uint32_t id, uint16_t tag, uint32_t v);
void send_ready(void);

#endif
