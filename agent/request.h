/* Handling of the frames the host sends. */
#ifndef VMPOD_REQUEST_H
#define VMPOD_REQUEST_H

#include "frame.h"

void request_handle(const struct frame_hdr *h, const uint8_t *payload);

#endif
