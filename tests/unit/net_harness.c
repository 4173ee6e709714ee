/* What the virtio-net tests share: frames, rx packets, the TAP's host end. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "net_harness.h"
#include "netns.h"

const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };

const struct virtio_net_hdr tcp4_gso_hdr = {
	.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
	.gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
	.hdr_len = 54,
	.gso_size = 1448,
	.csum_start = 34,
	.csum_offset = 16,
};

/* The IPv4 header checksum of n bytes. */
static uint16_t ip_csum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* 10.0.0.1 -> 10.0.0.2, protocol proto, ip_len bytes in all. */
static void build_ipv4(uint8_t *ip, int proto, size_t ip_len)
{
	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[2] = (uint8_t)(ip_len >> 8);
	ip[3] = (uint8_t)ip_len;
	ip[8] = 64;
	ip[9] = (uint8_t)proto;
	ip[12] = 10, ip[15] = 1;
	ip[16] = 10, ip[19] = 2;
	uint16_t c = ip_csum(ip, 20);
	ip[10] = (uint8_t)(c >> 8);
	ip[11] = (uint8_t)c;
}

/* Port 12345 -> 80: a TCP (PSH ACK) or UDP header, checksum left 0. */
static size_t build_l4(uint8_t *l, int proto, size_t payload)
{
	size_t l4 = proto == 6 ? 20 : 8;
	memset(l, 0, l4);
	l[0] = 0x30, l[1] = 0x39; /* 12345 */
	l[2] = 0x00, l[3] = 0x50; /* 80 */
	if (proto == 6) {
		l[12] = 5 << 4;
		l[13] = 0x18; /* PSH ACK */
		l[14] = 0xff, l[15] = 0xff;
	} else {
		l[4] = (uint8_t)((8 + payload) >> 8);
		l[5] = (uint8_t)(8 + payload);
	}
	return l4;
}

size_t build_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, int proto, size_t payload,
		   const char *marker)
{
	size_t ip_len = 20 + (proto == 6 ? 20 : 8) + payload;
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	build_ipv4(f + 14, proto, ip_len);
	uint8_t *d = f + 14 + 20 + build_l4(f + 14 + 20, proto, payload);
	for (size_t i = 0; i < payload; i++)
		d[i] = (uint8_t)(i * 7 + 3);
	memcpy(d, marker, strlen(marker) < payload ? strlen(marker) : payload);
	return 14 + ip_len;
}

void queue_tx_frame(unsigned q, size_t payload, const char *marker)
{
	size_t len = build_frame(guest + TX_FRAME_GPA, peer_mac, guest_mac, 17, payload, marker);
	memset(guest + TX_HDR_GPA, 0, 12);
	struct seg s[2] = { { TX_HDR_GPA, 12, false }, { TX_FRAME_GPA, (uint32_t)len, false } };
	add_chain(q, s, 2);
}

size_t take_packet(unsigned q, uint8_t *out, size_t cap, unsigned *nbufs)
{
	uint16_t avail = (uint16_t)(used_idx(q) - gqs[q].used_seen);
	if (avail == 0)
		return 0;
	uint32_t *e = (uint32_t *)(guest + gqs[q].used + 4 + 8 * (gqs[q].used_seen % qsize));
	const uint8_t *first = guest + gdesc(q, (uint16_t)e[0])->addr;
	unsigned n = first[10] | first[11] << 8;
	if (n == 0 || n > avail)
		return 0;
	size_t off = 0;
	for (unsigned i = 0; i < n; i++) {
		uint16_t id = 0;
		uint32_t len = 0;
		if (!get_used(q, &id, &len) || off + len > cap)
			return 0;
		memcpy(out + off, guest + gdesc(q, id)->addr, len);
		off += len;
	}
	if (nbufs)
		*nbufs = n;
	return off;
}

double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int host_send(int fd, const struct virtio_net_hdr *h, const void *frame, size_t len)
{
	struct iovec iov[2] = { { (void *)h, sizeof(*h) }, { (void *)frame, len } };
	ssize_t w = writev(fd, iov, 2);
	if (w < 0)
		fprintf(stderr, "  host send: %s\n", strerror(errno));
	return w == (ssize_t)(sizeof(*h) + len) ? 0 : -1;
}

ssize_t host_recv(int fd, uint8_t *buf, size_t cap, const char *marker, unsigned timeout_ms)
{
	double end = now_ms() + timeout_ms;
	while (now_ms() < end) {
		ssize_t r = recv(fd, buf, cap, MSG_DONTWAIT);
		if (r > 0 && memmem(buf, (size_t)r, marker, strlen(marker)))
			return r;
		if (r < 0)
			usleep(1000);
	}
	return -1;
}

int link_up(const char *ifname)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (rc == 0) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return rc;
}

int open_host(const char *ifname)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (s < 0)
		return -1;
	int one = 1;
	if (setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0)
		goto fail;
	setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	int big = 4 * (int)MiB;
	setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	struct sockaddr_ll sll;
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		goto fail;
	return s;
fail:
	close(s);
	return -1;
}

/* Writes text to a (sysctl) file, if it exists. */
static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, text, strlen(text)) < 0)
		perror(path);
	close(fd);
}

int start_net_test(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	int skip = enter_private_netns();
	if (skip)
		return skip;
	write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	return 0;
}
