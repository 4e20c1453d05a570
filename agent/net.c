/* Network setup with the classic ioctls: a few hundred bytes, where netlink would take a parser. The
 * host side is QEMU's user network (slirp), so an address, a netmask and a default route are all. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "agent.h"
#include "net.h"

static long sys_number(const char *ifname, const char *attr)
{
    char path[64], buf[32] = {0};
    snprintf(path, sizeof path, "/sys/class/net/%s/%s", ifname, attr);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    return n > 0 ? strtol(buf, NULL, 10) : -1;
}

/* The ethernet interface with the lowest index (eth0), not sit0 and the like. */
static int first_ether(char name[IFNAMSIZ])
{
    DIR *d = opendir("/sys/class/net");
    struct dirent *e;
    long best = -1;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' && strlen(e->d_name) < IFNAMSIZ &&
            sys_number(e->d_name, "type") == ARPHRD_ETHER) {
            long index = sys_number(e->d_name, "ifindex");
            if (best < 0 || (index >= 0 && index < best)) {
                best = index;
                memcpy(name, e->d_name, strlen(e->d_name) + 1);  /* fits: checked above */
            }
        }
    if (d)
        closedir(d);
    return best >= 0 ? 0 : -1;
}

static void set_addr(struct sockaddr *sa, struct in_addr a)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr = a};
    memcpy(sa, &in, sizeof in);
}

static int up(int s, const char *ifname)
{
    struct ifreq r = {0};
    snprintf(r.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &r) < 0)
        return -1;
    r.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &r);
}

static int configure(int s, const char *ifname, const struct net_spec *n, const char **step)
{
    struct ifreq r = {0};
    snprintf(r.ifr_name, IFNAMSIZ, "%s", ifname);
    set_addr(&r.ifr_addr, n->addr);
    if ((*step = "address", ioctl(s, SIOCSIFADDR, &r) < 0))
        return -1;
    set_addr(&r.ifr_netmask, n->mask);
    if ((*step = "netmask", ioctl(s, SIOCSIFNETMASK, &r) < 0) || (*step = "up", up(s, ifname) < 0))
        return -1;
    if (!n->gateway)
        return 0;
    struct rtentry rt = {0};
    struct in_addr any = {0};
    set_addr(&rt.rt_dst, any);
    set_addr(&rt.rt_genmask, any);
    set_addr(&rt.rt_gateway, n->gw);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    *step = "default route";
    return ioctl(s, SIOCADDRT, &rt);
}

/* virtio-net may still be probing: give it a moment, as wait_for_device does for the disk. */
static int wait_ether(char name[IFNAMSIZ])
{
    for (int i = 0; i < 200; i++) {
        if (first_ether(name) == 0)
            return 0;
        msleep(10);
    }
    return -1;
}

#define NO_ETHER "no ethernet interface appeared in 2 s (no virtio-net device, or its driver is not loaded)"

int net_set_mac(const unsigned char mac[6], char *msg, size_t cap)
{
    char ifname[IFNAMSIZ];
    if (wait_ether(ifname) < 0) {
        snprintf(msg, cap, "MAC: " NO_ETHER);
        return ENODEV;
    }
    struct ifreq r = {0};
    snprintf(r.ifr_name, IFNAMSIZ, "%s", ifname);
    r.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(r.ifr_hwaddr.sa_data, mac, 6);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), e = 0;
    if (s < 0 || ioctl(s, SIOCSIFHWADDR, &r) < 0) {
        e = errno;
        snprintf(msg, cap, "MAC: %s: %s", ifname, strerror(e));
    }
    if (s >= 0)
        close(s);
    return e;
}

int net_setup(const struct net_spec *n, char *msg, size_t cap)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), e;
    if (s < 0 || up(s, "lo") < 0) {
        e = errno;
        snprintf(msg, cap, "bringing up lo: %s", strerror(e));
        if (s >= 0)
            close(s);
        return e;
    }
    char ifname[IFNAMSIZ];
    const char *step = "";
    if (n->set && wait_ether(ifname) < 0) {
        e = ENODEV;
        snprintf(msg, cap, "NET_ADDRESS: " NO_ETHER);
    } else if (n->set && configure(s, ifname, n, &step) < 0) {
        e = errno;
        snprintf(msg, cap, "NET_ADDRESS: %s %s: %s", ifname, step, strerror(e));
    } else {
        e = 0;
    }
    close(s);
    return e;
}
