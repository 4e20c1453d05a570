/* Unit tests of MACHINE's value parsers (machine.c): the values a host sends, and hostile ones. */
#include <stdio.h>
#include <string.h>
#include "machine.h"
#include "tests/check.h"

static void test_time(void)
{
    struct timespec t;
    const char *why = NULL;
    CHECK(machine_time_parse("1796300000123456789", &t, &why) == 0);
    CHECK(t.tv_sec == 1796300000 && t.tv_nsec == 123456789);
    CHECK(machine_time_parse("0", &t, &why) == 0 && t.tv_sec == 0 && t.tv_nsec == 0);
    const char *bad[] = {"", "12a", "-5", "+5", " 5", "5 ", "1.5", "99999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECK(machine_time_parse(bad[i], &t, &why) < 0 && why);
    }
}

static void test_seed(void)
{
    unsigned char out[MACHINE_MAX_SEED];
    size_t len = 0;
    const char *why = NULL;
    CHECK(machine_seed_parse("00ff7A", out, &len, &why) == 0 && len == 3);
    CHECK(out[0] == 0 && out[1] == 0xff && out[2] == 0x7a);
    char full[2 * MACHINE_MAX_SEED + 3];
    memset(full, 'a', sizeof full - 1);
    full[sizeof full - 1] = 0;
    full[2 * MACHINE_MAX_SEED] = 0;
    CHECK(machine_seed_parse(full, out, &len, &why) == 0 && len == MACHINE_MAX_SEED);
    full[2 * MACHINE_MAX_SEED] = 'a';  /* one byte too many */
    CHECK(machine_seed_parse(full, out, &len, &why) < 0 && why);
    const char *bad[] = {"", "a", "abc", "zz", "0g", "00 1", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECK(machine_seed_parse(bad[i], out, &len, &why) < 0 && why);
    }
}

static void test_mac(void)
{
    unsigned char mac[6];
    const char *why = NULL;
    CHECK(machine_mac_parse("02:42:ac:11:00:0A", mac, &why) == 0);
    CHECK(mac[0] == 0x02 && mac[1] == 0x42 && mac[5] == 0x0a);
    const char *bad[] = {"", "02:42:ac:11:00", "02:42:ac:11:00:0a:", "02-42-ac-11-00-0a",
                         "01:00:5e:00:00:01", "00:00:00:00:00:00", "02:42:ac:11:00:0g",
                         "02:42:ac:11:0:0aa", "ff:ff:ff:ff:ff:ff"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECK(machine_mac_parse(bad[i], mac, &why) < 0 && why);
    }
}

int main(void)
{
    test_time();
    test_seed();
    test_mac();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
