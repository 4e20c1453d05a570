/* MACHINE's values, parsed and checked: pure functions, unit-tested on the host (see machine.h). */
#include <string.h>
#include "machine.h"

#define FAIL(msg) do { *why = (msg); return -1; } while (0)

int machine_time_parse(const char *s, struct timespec *t, const char **why)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || strspn(s, "0123456789") != n)
        FAIL("TIME is not 1 to 19 decimal digits");
    unsigned long long ns = 0;
    for (size_t i = 0; i < n; i++)
        ns = ns * 10 + (unsigned long long)(s[i] - '0');  /* 19 digits fit in 64 bits */
    t->tv_sec = (time_t)(ns / 1000000000ull);
    t->tv_nsec = (long)(ns % 1000000000ull);
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int machine_seed_parse(const char *hex, unsigned char *out, size_t *len, const char **why)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 || n > 2 * MACHINE_MAX_SEED)
        FAIL("SEED is not 2 to 128 hex digits, an even number of them");
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0)
            FAIL("SEED has a character that is not a hex digit");
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    *len = n / 2;
    return 0;
}

int machine_mac_parse(const char *s, unsigned char mac[6], const char **why)
{
    if (strlen(s) != 17)
        FAIL("MAC is not six colon-separated hex pairs");
    unsigned any = 0;
    for (int i = 0; i < 6; i++) {
        const char *p = s + 3 * i;
        int hi = hex_digit(p[0]), lo = hex_digit(p[1]);
        if (hi < 0 || lo < 0 || (i < 5 && p[2] != ':'))
            FAIL("MAC is not six colon-separated hex pairs");
        mac[i] = (unsigned char)(hi << 4 | lo);
        any |= mac[i];
    }
    if (mac[0] & 1)
        FAIL("MAC is a multicast address");
    if (!any)
        FAIL("MAC is all zeros");
    return 0;
}
