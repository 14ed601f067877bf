// SPDX-License-Identifier: Apache-2.0
//
// The relay's kernel fast path: a TC (sched_cls) program attached at ingress that relays
// ChannelData over UDP, IPv4 or IPv6, for channels the Python relay has bound (RFC 8656 §12).
//
// Python keeps every decision. It writes one entry per direction after a ChannelBind succeeded
// and deletes them when the channel or allocation ends; each entry carries its own expiry, which
// this program checks, so a stalled relay process cannot keep a channel alive. Anything this
// program does not handle exactly is passed up unchanged (TC_ACT_UNSPEC) and takes the userspace
// path: STUN, Send/Data indications, padded or truncated ChannelData, IPv4 options, IPv6
// extension headers, fragments, expired entries, packets that would exceed the egress MTU, and
// channels whose client and peer are of different address families (an IPv4 client with an IPv6
// relayed address, or the reverse: Python writes those entries only so that this program can
// count what it hands up).
//
//   client -> relay:  [IP][UDP client:c -> listen:l][chan][len][data]
//           becomes   [IP][UDP relay:r  -> peer:p  ][data]             (to_peer map)
//   peer -> relay:    [IP][UDP peer:p   -> relay:r ][data]
//           becomes   [IP][UDP listen:l -> client:c][chan][len][data]  (to_client map)
//
// The UDP header never moves: the payload is shifted by four bytes instead, so a packet whose
// checksum the sender left for the hardware to finish (CHECKSUM_PARTIAL: csum_start points at
// the UDP header) still gets a correct checksum wherever it is finished. Every header change
// goes through bpf_l4_csum_replace, which updates a full checksum incrementally and, for a
// partial one, only the pseudo-header part; a zero (absent) IPv4 UDP checksum stays zero. IPv6
// has no "absent" checksum: a datagram without one is handed up (the stack drops it), and an
// updated checksum that comes to zero is written as 0xffff (BPF_F_MARK_MANGLED_0).
// Packet bytes are read and written only through bpf_skb_load_bytes/bpf_skb_store_bytes, so no
// packet pointer is ever held across a helper call.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define IP_OFF ETH_HLEN                           // 14: the IPv4 or IPv6 header
#define UDP4_OFF (IP_OFF + sizeof(struct iphdr))  // 34: no IPv4 options
#define UDP6_OFF (IP_OFF + sizeof(struct ipv6hdr))  // 54: no IPv6 extension headers
#define CHECK_OFF offsetof(struct udphdr, check)
#define LOOPBACK_IFINDEX 1
#define MAX_DATA 2047  // larger payloads (jumbo frames) go to userspace
#define CSUM_FLAGS (BPF_F_MARK_MANGLED_0)
#define PSEUDO_FLAGS (BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR)

// Addresses are 16 bytes in every key and route: an IPv6 address, or an IPv4 address in the
// first four bytes and zeros after it. The family field keeps the two apart.
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

// Key of a client's ChannelData: the client's 5-tuple as seen on the wire, plus the channel.
struct client_key {
	__be32 client_ip[4];
	__be32 server_ip[4];  // the listening address the client sends to; 0 for 0.0.0.0 or ::
	__be16 client_port;
	__be16 server_port;
	__be16 channel;  // as on the wire
	__u8 family;     // of the client's packets
	__u8 pad;
};

// Key of a peer's datagram: the peer's address and the allocation's relayed address.
struct peer_key {
	__be32 peer_ip[4];
	__be32 relay_ip[4];  // 0 when the relay socket is bound to 0.0.0.0 or ::
	__be16 peer_port;
	__be16 relay_port;
	__u8 family;  // of the peer's packets
	__u8 pad[3];
};

// What to send instead, for both maps. Python writes everything but the counters.
struct route {
	__be32 src_ip[4];  // src_ip and dst_ip must stay adjacent (one checksum diff for both)
	__be32 dst_ip[4];
	__be16 src_port;
	__be16 dst_port;
	__be16 channel;  // to_client only: the channel number to put in front
	__u8 family;     // of the packet to send; unlike the key's: hand the packet up, counted
	__u8 pad;
	__u32 ifindex;     // egress interface (from the routing table, looked up by Python)
	__u32 owner;       // which --workers process wrote it (0: a single process); not read here
	__u64 expires_ns;  // CLOCK_MONOTONIC, as bpf_ktime_get_ns()
	__u64 packets;     // relayed by this entry
	__u64 bytes;       // payload bytes relayed by this entry
};

// Why a packet that matched an entry was handed to userspace (offload.py's PUNT_REASONS).
enum punt_reason {
	PUNT_EXPIRED,
	PUNT_LENGTH,
	PUNT_MTU,
	PUNT_SIZE,
	PUNT_FAMILY,    // client and peer are of different address families
	PUNT_CHECKSUM,  // an IPv6 datagram without a UDP checksum (the stack drops it)
	PUNT_REASONS
};

struct scratch {
	__u8 data[MAX_DATA + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct route);
} to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct route);
} to_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PUNT_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} punted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} buffer SEC(".maps");

// The network header of one datagram, as it arrived.
union network_header {
	struct iphdr v4;
	struct ipv6hdr v6;
};

// One UDP datagram, read once; `family` and `udp_off` are constants in each caller, so the
// compiler makes one copy of the code below per family.
struct datagram {
	union network_header ip;
	struct udphdr udp;
	__u32 udp_off;   // where the UDP header starts
	__u32 data_len;  // UDP payload bytes
	__u8 family;
};

static __always_inline int punt(__u32 reason)
{
	__u64 *count = bpf_map_lookup_elem(&punted, &reason);

	if (count)
		*count += 1;
	return TC_ACT_UNSPEC;
}

// Move `len` payload bytes from `from` to `to` (offsets in the packet).
static __always_inline int move_payload(struct __sk_buff *skb, __u32 from, __u32 to, __u32 len)
{
	__u32 zero = 0;
	struct scratch *buf;

	if (len == 0)
		return 0;
	len = ((len - 1) & MAX_DATA) + 1;  // callers checked len <= MAX_DATA; tell the verifier
	buf = bpf_map_lookup_elem(&buffer, &zero);
	if (!buf)
		return -1;
	if (bpf_skb_load_bytes(skb, from, buf->data, len))
		return -1;
	return bpf_skb_store_bytes(skb, to, buf->data, len, BPF_F_RECOMPUTE_CSUM);
}

// Send the rewritten packet on its way. A packet that came in on loopback and is for a local
// socket is simply delivered where it is (its route is already the local one); anything else
// leaves through the entry's egress interface, the neighbour table filling in the MACs.
static __always_inline int send(struct __sk_buff *skb, const struct route *r)
{
	if (r->ifindex == LOOPBACK_IFINDEX && skb->ifindex == LOOPBACK_IFINDEX)
		return TC_ACT_OK;
	return bpf_redirect_neigh(r->ifindex, 0, 0, 0);
}

// The UDP header's ports and length for `r`, with the checksum's header part updated.
static __always_inline int rewrite_udp(struct __sk_buff *skb, const struct datagram *d,
				       const struct route *r, __u16 udp_len)
{
	__u32 check_off = d->udp_off + CHECK_OFF;
	__be16 new_len = bpf_htons(udp_len);
	__be32 old_ports = ((__u32)d->udp.dest << 16) | d->udp.source;
	__be32 new_ports = ((__u32)r->dst_port << 16) | r->src_port;
	__be16 ports_len[3] = {r->src_port, r->dst_port, new_len};

	// The length is in the pseudo header and in the UDP header; the ports in the header only.
	if (bpf_l4_csum_replace(skb, check_off, d->udp.len, new_len, PSEUDO_FLAGS | 2) ||
	    bpf_l4_csum_replace(skb, check_off, d->udp.len, new_len, CSUM_FLAGS | 2) ||
	    bpf_l4_csum_replace(skb, check_off, old_ports, new_ports, CSUM_FLAGS | 4))
		return -1;
	return bpf_skb_store_bytes(skb, d->udp_off, ports_len, sizeof(ports_len), 0);
}

// Rewrite the IPv4 and UDP headers for `r`, with UDP length `udp_len`; fix both checksums.
static __always_inline int rewrite_ipv4(struct __sk_buff *skb, const struct datagram *d,
					const struct route *r, __u16 udp_len)
{
	struct iphdr ip = d->ip.v4;
	__s64 sum;

	// UDP checksum: the pseudo header's addresses (its length goes with the header's).
	if (bpf_l4_csum_replace(skb, UDP4_OFF + CHECK_OFF, d->ip.v4.saddr, r->src_ip[0],
				PSEUDO_FLAGS | 4) ||
	    bpf_l4_csum_replace(skb, UDP4_OFF + CHECK_OFF, d->ip.v4.daddr, r->dst_ip[0],
				PSEUDO_FLAGS | 4) ||
	    rewrite_udp(skb, d, r, udp_len))
		return -1;

	// A fresh IPv4 header, as the relay's own socket would send it.
	ip.tot_len = bpf_htons(udp_len + sizeof(struct iphdr));
	ip.saddr = r->src_ip[0];
	ip.daddr = r->dst_ip[0];
	ip.ttl = 64;
	ip.check = 0;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (sum < 0)
		return -1;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip.check = (__u16)~sum;
	return bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0);
}

// Rewrite the IPv6 and UDP headers for `r`, with UDP length `udp_len`; fix the UDP checksum.
// IPv6 has no header checksum; bpf_skb_change_tail, called before this, has turned a
// CHECKSUM_COMPLETE packet into CHECKSUM_NONE, so skb->csum needs no care here (nor in IPv4).
static __always_inline int rewrite_ipv6(struct __sk_buff *skb, const struct datagram *d,
					const struct route *r, __u16 udp_len)
{
	struct ipv6hdr ip = d->ip.v6;
	__s64 diff;

	// UDP checksum: both pseudo-header addresses in one difference (32 bytes each way).
	diff = bpf_csum_diff((__be32 *)&d->ip.v6.saddr, 32, (__be32 *)r->src_ip, 32, 0);
	if (diff < 0 ||
	    bpf_l4_csum_replace(skb, UDP6_OFF + CHECK_OFF, 0, (__u32)diff, PSEUDO_FLAGS) ||
	    rewrite_udp(skb, d, r, udp_len))
		return -1;

	// The same header with new addresses and length, and the hop limit the relay's own socket
	// would send with; traffic class and flow label are kept.
	ip.payload_len = bpf_htons(udp_len);
	ip.hop_limit = 64;
	__builtin_memcpy(&ip.saddr, r->src_ip, 16);
	__builtin_memcpy(&ip.daddr, r->dst_ip, 16);
	return bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0);
}

static __always_inline int rewrite_headers(struct __sk_buff *skb, const struct datagram *d,
					   const struct route *r, __u16 udp_len)
{
	if (d->family == FAMILY_IPV6)
		return rewrite_ipv6(skb, d, r, udp_len);
	return rewrite_ipv4(skb, d, r, udp_len);
}

// Client ChannelData -> plain UDP to the peer: drop the 4-byte ChannelData header.
static __always_inline int to_peer_path(struct __sk_buff *skb, const struct datagram *d,
					struct route *r, __be32 channel_header, __u32 data_len)
{
	__u32 payload_off = d->udp_off + sizeof(struct udphdr);

	if (move_payload(skb, payload_off + 4, payload_off, data_len))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, skb->len - 4, 0))
		return TC_ACT_SHOT;
	// The four ChannelData bytes left the sum; the data kept its 16-bit alignment.
	if (bpf_l4_csum_replace(skb, d->udp_off + CHECK_OFF, channel_header, 0, CSUM_FLAGS | 4))
		return TC_ACT_SHOT;
	if (rewrite_headers(skb, d, r, sizeof(struct udphdr) + data_len))
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, data_len);
	return send(skb, r);
}

// A peer's datagram -> ChannelData to the client: put the 4-byte header in front.
static __always_inline int to_client_path(struct __sk_buff *skb, const struct datagram *d,
					  struct route *r)
{
	__u32 payload_off = d->udp_off + sizeof(struct udphdr);
	__be16 channel_header[2] = {r->channel, bpf_htons(d->data_len)};
	__be32 header_word = *(__be32 *)channel_header;

	if (bpf_skb_change_tail(skb, skb->len + 4, 0))
		return TC_ACT_SHOT;
	if (move_payload(skb, payload_off, payload_off + 4, d->data_len))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, payload_off, channel_header, 4, 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, d->udp_off + CHECK_OFF, 0, header_word, CSUM_FLAGS | 4))
		return TC_ACT_SHOT;
	if (rewrite_headers(skb, d, r, sizeof(struct udphdr) + 4 + d->data_len))
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, d->data_len);
	return send(skb, r);
}

// The source and destination addresses of `d`, in the maps' 16-byte form.
static __always_inline void addresses(const struct datagram *d, __be32 *src, __be32 *dst)
{
	if (d->family == FAMILY_IPV6) {
		__builtin_memcpy(src, &d->ip.v6.saddr, 16);
		__builtin_memcpy(dst, &d->ip.v6.daddr, 16);
	} else {
		src[0] = d->ip.v4.saddr;
		dst[0] = d->ip.v4.daddr;
	}
}

// A datagram that may be ChannelData from a client or a peer's datagram for a relayed address.
static __always_inline int relay(struct __sk_buff *skb, const struct datagram *d)
{
	struct route *r;

	if (d->data_len >= 4) {
		__be16 channel_header[2];

		if (bpf_skb_load_bytes(skb, d->udp_off + sizeof(struct udphdr), channel_header, 4))
			return TC_ACT_UNSPEC;
		__u8 first = ((__u8 *)channel_header)[0];

		if (first >= 0x40 && first <= 0x7f) {
			struct client_key key = {
				.client_port = d->udp.source,
				.server_port = d->udp.dest,
				.channel = channel_header[0],
				.family = d->family,
			};

			addresses(d, key.client_ip, key.server_ip);
			r = bpf_map_lookup_elem(&to_peer, &key);
			if (!r) {  // a listener bound to 0.0.0.0 or :: is keyed without the address
				__builtin_memset(key.server_ip, 0, sizeof(key.server_ip));
				r = bpf_map_lookup_elem(&to_peer, &key);
			}
			if (r) {
				if (r->family != d->family)
					return punt(PUNT_FAMILY);
				if (bpf_ktime_get_ns() >= r->expires_ns)
					return punt(PUNT_EXPIRED);
				if (d->family == FAMILY_IPV6 && d->udp.check == 0)
					return punt(PUNT_CHECKSUM);
				// Exactly one ChannelData message, unpadded; anything else is userspace's.
				if (bpf_ntohs(channel_header[1]) != d->data_len - 4)
					return punt(PUNT_LENGTH);
				if (d->data_len - 4 > MAX_DATA)
					return punt(PUNT_SIZE);
				return to_peer_path(skb, d, r, *(__be32 *)channel_header,
						    d->data_len - 4);
			}
		}
	}

	struct peer_key key = {
		.peer_port = d->udp.source,
		.relay_port = d->udp.dest,
		.family = d->family,
	};

	addresses(d, key.peer_ip, key.relay_ip);
	r = bpf_map_lookup_elem(&to_client, &key);
	if (!r) {  // a relay socket bound to a wildcard (behind 1:1 NAT) is keyed without it
		__builtin_memset(key.relay_ip, 0, sizeof(key.relay_ip));
		r = bpf_map_lookup_elem(&to_client, &key);
		if (!r)
			return TC_ACT_UNSPEC;
	}
	if (r->family != d->family)
		return punt(PUNT_FAMILY);
	if (bpf_ktime_get_ns() >= r->expires_ns)
		return punt(PUNT_EXPIRED);
	if (d->family == FAMILY_IPV6 && d->udp.check == 0)
		return punt(PUNT_CHECKSUM);
	if (d->data_len > MAX_DATA - 4)
		return punt(PUNT_SIZE);
	{
		__u32 mtu_len = 0;

		if (bpf_check_mtu(skb, r->ifindex, &mtu_len, 4, 0))
			return punt(PUNT_MTU);
	}
	return to_client_path(skb, d, r);
}

// Plain IPv4/UDP only: no options, no fragments, no trailing bytes after the datagram.
static __always_inline int ipv4(struct __sk_buff *skb)
{
	struct datagram d = {.udp_off = UDP4_OFF, .family = FAMILY_IPV4};
	struct {
		struct iphdr ip;
		struct udphdr udp;
	} h;

	if (bpf_skb_load_bytes(skb, IP_OFF, &h, sizeof(h)))  // one read for both headers
		return TC_ACT_UNSPEC;
	d.ip.v4 = h.ip;
	d.udp = h.udp;
	if (d.ip.v4.version != 4 || d.ip.v4.ihl != 5 || d.ip.v4.protocol != IPPROTO_UDP ||
	    (d.ip.v4.frag_off & bpf_htons(0x3fff)) ||
	    skb->len != IP_OFF + bpf_ntohs(d.ip.v4.tot_len) ||
	    bpf_ntohs(d.udp.len) != bpf_ntohs(d.ip.v4.tot_len) - sizeof(struct iphdr))
		return TC_ACT_UNSPEC;
	d.data_len = bpf_ntohs(d.udp.len) - sizeof(struct udphdr);
	return relay(skb, &d);
}

// Plain IPv6/UDP only: UDP right after the fixed header (an extension header, a fragment
// header among them, means userspace), no jumbogram, no trailing bytes after the datagram.
static __always_inline int ipv6(struct __sk_buff *skb)
{
	struct datagram d = {.udp_off = UDP6_OFF, .family = FAMILY_IPV6};
	struct {
		struct ipv6hdr ip;
		struct udphdr udp;
	} h;

	if (bpf_skb_load_bytes(skb, IP_OFF, &h, sizeof(h)))  // one read for both headers
		return TC_ACT_UNSPEC;
	d.ip.v6 = h.ip;
	d.udp = h.udp;
	if (d.ip.v6.version != 6 || d.ip.v6.nexthdr != IPPROTO_UDP ||
	    skb->len != UDP6_OFF + bpf_ntohs(d.ip.v6.payload_len) ||
	    d.udp.len != d.ip.v6.payload_len || bpf_ntohs(d.udp.len) < sizeof(struct udphdr))
		return TC_ACT_UNSPEC;
	d.data_len = bpf_ntohs(d.udp.len) - sizeof(struct udphdr);
	return relay(skb, &d);
}

SEC("tc")
int turnpike_fastpath(struct __sk_buff *skb)
{
	__be16 eth_proto;

	if (skb->gso_segs > 1)
		return TC_ACT_UNSPEC;
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2) ||
	    eth_proto != skb->protocol)
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return ipv4(skb);
	return ipv6(skb);
}

char LICENSE[] SEC("license") = "GPL";
