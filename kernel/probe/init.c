/* Test /init for kernel/probe: proves a guest kernel boots far enough for vmpod.
 * Mounts devtmpfs/proc/sys, checks that a 20 ms sleep returns (timer interrupts work), loads /modules/NN-*.ko in name order (finit_module),
 * prints the uptime, finds the virtio-serial port named org.vmpod.agent.0 and writes
 * "vmpod-probe-hello" to it, checks /dev/vda (and mounts it read-only as ext4 when it
 * holds one), then leaves the way `vmpod.off=` on the kernel command line says:
 * reboot (RB_AUTOBOOT, default), poweroff (RB_POWER_OFF), halt (RB_HALT_SYSTEM).
 * Build: musl-gcc -static -Os -o init init.c */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void say(const char *fmt, const char *a, const char *b)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, fmt, a, b);
    if (n > 0) write(1, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static int slurp(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    return 0;
}

static void uptime(const char *what)
{
    char buf[64];
    if (slurp("/proc/uptime", buf, sizeof buf) == 0) {
        *strchrnul(buf, ' ') = 0;
        say("VMPOD-PROBE uptime %s %s\n", what, buf);
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int load_modules(void)
{
    struct dirent **ents;
    int n = scandir("/modules", &ents, NULL, alphasort), bad = 0;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (strstr(name, ".ko")) {
            char path[300];
            snprintf(path, sizeof path, "/modules/%s", name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) {
                say("VMPOD-PROBE insmod %s FAILED: %s\n", name, strerror(errno));
                bad = 1;
            } else {
                say("VMPOD-PROBE insmod %s ok%s\n", name, "");
            }
            if (fd >= 0) close(fd);
        }
        free(ents[i]);
    }
    if (n > 0) free(ents);
    return bad;
}

/* Look for the agent port for up to 3 s: ports appear from a workqueue after the
 * host answers the driver's DEVICE_READY, so not necessarily before /init runs. */
static int find_port(char *dev, size_t len)
{
    for (int tries = 0; tries < 300; tries++) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char path[300], name[128];
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            if (slurp(path, name, sizeof name) == 0 && strcmp(name, "org.vmpod.agent.0") == 0) {
                snprintf(dev, len, "/dev/%s", e->d_name);
                closedir(d);
                return tries;
            }
        }
        if (d) closedir(d);
        sleep_ms(10);
    }
    return -1;
}

int main(void)
{
    char cmdline[1024] = "", dev[64];
    mkdir("/dev", 0755);
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mkdir("/mnt", 0755);
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0 && errno != EBUSY)
        say("VMPOD-PROBE mount /dev failed: %s%s\n", strerror(errno), "");
    int con = open("/dev/console", O_RDWR);
    if (con >= 0) { dup2(con, 0); dup2(con, 1); dup2(con, 2); if (con > 2) close(con); }
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    uptime("init");
    slurp("/proc/cmdline", cmdline, sizeof cmdline);

    /* A guest without a working timer interrupt boots but hangs in the first sleep. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sleep_ms(20);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    char ms[32];
    snprintf(ms, sizeof ms, "%ld", (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    say("VMPOD-PROBE timer ok: nanosleep(20 ms) took %s ms%s\n", ms, "");

    int bad = load_modules();
    if (access("/modules", F_OK) == 0) uptime("modules-loaded");

    int tries = find_port(dev, sizeof dev);
    if (tries >= 0) {
        char t[16];
        snprintf(t, sizeof t, "%d", tries * 10);
        say("VMPOD-PROBE port org.vmpod.agent.0 = %s (after ~%s ms)\n", dev, t);
        int fd = open(dev, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 || write(fd, "vmpod-probe-hello\n", 18) != 18)
            say("VMPOD-PROBE write %s FAILED: %s\n", dev, strerror(errno));
        if (fd >= 0) close(fd);
    } else {
        say("VMPOD-PROBE port org.vmpod.agent.0 MISSING%s%s\n", "", "");
        bad = 1;
    }

    struct stat st;
    int vda = -1;
    for (int i = 0; i < 100 && (vda = stat("/dev/vda", &st)) != 0; i++) sleep_ms(10);
    if (vda == 0 && S_ISBLK(st.st_mode)) {
        say("VMPOD-PROBE /dev/vda present%s%s\n", "", "");
        if (mount("/dev/vda", "/mnt", "ext4", MS_RDONLY, NULL) == 0) {
            char hello[64] = "";
            slurp("/mnt/hello", hello, sizeof hello);
            say("VMPOD-PROBE ext4 on /dev/vda mounted, /hello = %s%s\n", hello, "");
            umount("/mnt");
        } else {
            say("VMPOD-PROBE ext4 mount of /dev/vda: %s%s\n", strerror(errno), "");
        }
    } else {
        say("VMPOD-PROBE /dev/vda MISSING%s%s\n", "", "");
        bad = 1;
    }

    uptime("done");
    say("VMPOD-PROBE result %s%s\n", bad ? "FAIL" : "OK", "");
    sync();
    const char *off = strstr(cmdline, "vmpod.off=");
    off = off ? off + strlen("vmpod.off=") : "reboot";
    if (strncmp(off, "poweroff", 8) == 0) {
        say("VMPOD-PROBE reboot(RB_POWER_OFF)%s%s\n", "", "");
        reboot(RB_POWER_OFF);
    } else if (strncmp(off, "halt", 4) == 0) {
        say("VMPOD-PROBE reboot(RB_HALT_SYSTEM)%s%s\n", "", "");
        reboot(RB_HALT_SYSTEM);
    } else {
        say("VMPOD-PROBE reboot(RB_AUTOBOOT)%s%s\n", "", "");
        reboot(RB_AUTOBOOT);
    }
    say("VMPOD-PROBE reboot() returned: %s%s\n", strerror(errno), "");
    for (;;) pause();
}
