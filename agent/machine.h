/* MACHINE (docs/protocol.md): what makes a VM its own, above all one restored from a template that
 * many VMs share: the wall clock, fresh entropy for the kernel's random pool, the NIC's MAC address.
 * The parsers are pure, for host unit tests; machine_apply acts (PID 1 only). */
#ifndef VMPOD_MACHINE_H
#define VMPOD_MACHINE_H

#include <stddef.h>
#include <time.h>

#define MACHINE_MAX_SEED 64  /* bytes of entropy in one SEED (128 hex digits) */

struct machine_spec {
    int has_time, has_mac;
    struct timespec time;
    size_t seed_len;
    unsigned char seed[MACHINE_MAX_SEED];
    unsigned char mac[6];
};

/* TIME: nanoseconds since the epoch, decimal digits only (1 to 19). 0 or -1 with *why. */
int machine_time_parse(const char *s, struct timespec *t, const char **why);
/* SEED: an even number (2 to 128) of lowercase or uppercase hex digits. */
int machine_seed_parse(const char *hex, unsigned char *out, size_t *len, const char **why);
/* MAC: six colon-separated pairs of hex digits, a unicast address that is not all zeros. */
int machine_mac_parse(const char *s, unsigned char mac[6], const char **why);
/* Sets the clock, feeds and reseeds the random pool, sets the MAC; 0 or an errno with msg. */
int machine_apply(const struct machine_spec *m, char *msg, size_t cap);

#endif
