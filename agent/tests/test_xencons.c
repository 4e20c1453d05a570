/* Unit tests of the Xen console channel's parsers (xencons.c): device names, xenstore requests and
 * replies (hostile ones too), the hvc index of a console. */
#include <stdio.h>
#include <string.h>
#include "xencons.h"
#include "tests/check.h"

static size_t reply(uint8_t *b, uint32_t type, uint32_t id, uint32_t len, const char *v, size_t vlen)
{
    memcpy(b, &type, 4);
    memcpy(b + 4, &id, 4);
    memset(b + 8, 0, 4);
    memcpy(b + 12, &len, 4);
    memcpy(b + 16, v, vlen);
    return 16 + vlen;
}

static void test_devid(void)
{
    CHECK(xen_console_devid("console-1") == 1);
    CHECK(xen_console_devid("console-0") == 0);
    CHECK(xen_console_devid("console-12") == 12);
    CHECK(xen_console_devid("console-") == -1);
    CHECK(xen_console_devid("console-1a") == -1);
    CHECK(xen_console_devid("console--1") == -1);
    CHECK(xen_console_devid("vbd-51712") == -1);
    CHECK(xen_console_devid("console-99999999999999999999") == -1);
    CHECK(xen_console_devid("") == -1);
}

static void test_request(void)
{
    uint8_t b[64];
    size_t n = xs_read_request(b, sizeof b, 7, "device/console/1/name");
    uint32_t type, id, tx, len;
    memcpy(&type, b, 4), memcpy(&id, b + 4, 4), memcpy(&tx, b + 8, 4), memcpy(&len, b + 12, 4);
    CHECK(n == 16 + 22 && type == XS_READ && id == 7 && tx == 0 && len == 22);
    CHECK(memcmp(b + 16, "device/console/1/name", 22) == 0);
    CHECK(xs_read_request(b, 20, 7, "device/console/1/name") == 0);  /* does not fit */
}

static void test_reply(void)
{
    uint8_t b[64];
    char out[32];
    size_t n = reply(b, XS_READ, 9, 17, "org.vmpod.agent.0", 17);
    CHECK(xs_parse_reply(b, n, 9, out, sizeof out) == 17 && strcmp(out, "org.vmpod.agent.0") == 0);
    for (size_t k = 0; k < n; k++)
        CHECK(xs_parse_reply(b, k, 9, out, sizeof out) == XS_SHORT);
    CHECK(xs_parse_reply(b, n, 8, out, sizeof out) == XS_BAD);  /* another request's answer */
    CHECK(xs_parse_reply(b, n, 9, out, 17) == XS_BAD);  /* no room for the NUL */
    n = reply(b, XS_ERROR, 9, 7, "ENOENT", 7);
    CHECK(xs_parse_reply(b, n, 9, out, sizeof out) == XS_BAD);
    n = reply(b, XS_READ, 9, 0xFFFFFFF0u, "", 0);  /* a hostile length */
    CHECK(xs_parse_reply(b, n, 9, out, sizeof out) == XS_BAD);
    n = reply(b, XS_READ, 9, 3, "a\0b", 3);  /* an embedded NUL */
    CHECK(xs_parse_reply(b, n, 9, out, sizeof out) == XS_BAD);
    n = reply(b, XS_READ, 9, 0, "", 0);
    CHECK(xs_parse_reply(b, n, 9, out, sizeof out) == 0 && out[0] == 0);
}

static void test_hvc_index(void)
{
    int one[] = {1};
    int several[] = {5, 2, 9};
    CHECK(xen_hvc_index(one, 1, 1) == 1);
    CHECK(xen_hvc_index(several, 3, 2) == 1);
    CHECK(xen_hvc_index(several, 3, 5) == 2);
    CHECK(xen_hvc_index(several, 3, 9) == 3);
    CHECK(xen_hvc_index(several, 3, 4) == -1);
    CHECK(xen_hvc_index(one, 0, 1) == -1);
}

int main(void)
{
    test_devid();
    test_request();
    test_reply();
    test_hvc_index();
    printf("test_xencons: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
