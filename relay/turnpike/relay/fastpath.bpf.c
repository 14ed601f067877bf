// SPDX-License-Identifier: Apache-2.0
//
// The relay's kernel fast path: a TC (sched_cls) program attached at ingress that relays
// ChannelData over IPv4/UDP for channels the Python relay has bound (RFC 8656 §12).
//
// Python keeps every decision. It writes one entry per direction after a ChannelBind succeeded
// and deletes them when the channel or allocation ends; each entry carries its own expiry, which
// this program checks, so a stalled relay process cannot keep a channel alive. Anything this
// program does not handle exactly is passed up unchanged (TC_ACT_UNSPEC) and takes the userspace
// path: STUN, Send/Data indications, padded or truncated ChannelData, IP options, fragments,
// expired entries, packets that would exceed the egress MTU.
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
// partial one, only the pseudo-header part; a zero (absent) IPv4 UDP checksum stays zero.
// Packet bytes are read and written only through bpf_skb_load_bytes/bpf_skb_store_bytes, so no
// packet pointer is ever held across a helper call.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define IP_OFF ETH_HLEN                          // 14: IPv4 header, no options
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))  // 34
#define UDP_CHECK_OFF (UDP_OFF + offsetof(struct udphdr, check))
#define PAYLOAD_OFF (UDP_OFF + sizeof(struct udphdr))  // 42: UDP payload
#define LOOPBACK_IFINDEX 1
#define MAX_DATA 2047  // larger payloads (jumbo frames) go to userspace
#define CSUM_FLAGS (BPF_F_MARK_MANGLED_0)
#define PSEUDO_FLAGS (BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR)

// Key of a client's ChannelData: the client's 5-tuple as seen on the wire, plus the channel.
struct client_key {
	__be32 client_ip;
	__be32 server_ip;  // the listening address the client sends to; 0 for 0.0.0.0
	__be16 client_port;
	__be16 server_port;
	__be16 channel;  // as on the wire
	__u16 pad;
};

// Key of a peer's datagram: the peer's address and the allocation's relayed address.
struct peer_key {
	__be32 peer_ip;
	__be32 relay_ip;  // 0 when the relay socket is bound to 0.0.0.0
	__be16 peer_port;
	__be16 relay_port;
};

// What to send instead, for both maps. Python writes everything but the counters.
struct route {
	__be32 src_ip;
	__be32 dst_ip;
	__be16 src_port;
	__be16 dst_port;
	__be16 channel;  // to_client only: the channel number to put in front
	__u16 pad;
	__u32 ifindex;     // egress interface (from the routing table, looked up by Python)
	__u32 owner;       // which --workers process wrote it (0: a single process); not read here
	__u64 expires_ns;  // CLOCK_MONOTONIC, as bpf_ktime_get_ns()
	__u64 packets;     // relayed by this entry
	__u64 bytes;       // payload bytes relayed by this entry
};

// Why a packet that matched an entry was handed to userspace.
enum punt_reason { PUNT_EXPIRED, PUNT_LENGTH, PUNT_MTU, PUNT_SIZE, PUNT_REASONS };

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

// The headers of one IPv4/UDP packet, read once.
struct headers {
	struct iphdr ip;
	struct udphdr udp;
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

// Rewrite the IPv4 and UDP headers for `r`, with UDP length `udp_len`; fix both checksums.
static __always_inline int rewrite_headers(struct __sk_buff *skb, const struct headers *old,
					   const struct route *r, __u16 udp_len)
{
	struct iphdr ip = old->ip;
	__be16 new_len = bpf_htons(udp_len);
	__be32 old_ports = ((__u32)old->udp.dest << 16) | old->udp.source;
	__be32 new_ports = ((__u32)r->dst_port << 16) | r->src_port;
	__be16 ports_len[3] = {r->src_port, r->dst_port, new_len};
	__s64 sum;

	// UDP checksum: the pseudo header (addresses, length) and the header (ports, length).
	if (bpf_l4_csum_replace(skb, UDP_CHECK_OFF, old->ip.saddr, r->src_ip, PSEUDO_FLAGS | 4) ||
	    bpf_l4_csum_replace(skb, UDP_CHECK_OFF, old->ip.daddr, r->dst_ip, PSEUDO_FLAGS | 4) ||
	    bpf_l4_csum_replace(skb, UDP_CHECK_OFF, old->udp.len, new_len, PSEUDO_FLAGS | 2) ||
	    bpf_l4_csum_replace(skb, UDP_CHECK_OFF, old->udp.len, new_len, CSUM_FLAGS | 2) ||
	    bpf_l4_csum_replace(skb, UDP_CHECK_OFF, old_ports, new_ports, CSUM_FLAGS | 4))
		return -1;
	if (bpf_skb_store_bytes(skb, UDP_OFF, ports_len, sizeof(ports_len), 0))
		return -1;

	// A fresh IPv4 header, as the relay's own socket would send it.
	ip.tot_len = bpf_htons(udp_len + sizeof(struct iphdr));
	ip.saddr = r->src_ip;
	ip.daddr = r->dst_ip;
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

// Client ChannelData -> plain UDP to the peer: drop the 4-byte ChannelData header.
static __always_inline int to_peer_path(struct __sk_buff *skb, const struct headers *h,
					struct route *r, __be32 channel_header, __u32 data_len)
{
	if (move_payload(skb, PAYLOAD_OFF + 4, PAYLOAD_OFF, data_len))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, skb->len - 4, 0))
		return TC_ACT_SHOT;
	// The four ChannelData bytes left the sum; the data kept its 16-bit alignment.
	if (bpf_l4_csum_replace(skb, UDP_CHECK_OFF, channel_header, 0, CSUM_FLAGS | 4))
		return TC_ACT_SHOT;
	if (rewrite_headers(skb, h, r, sizeof(struct udphdr) + data_len))
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, data_len);
	return send(skb, r);
}

// A peer's datagram -> ChannelData to the client: put the 4-byte header in front.
static __always_inline int to_client_path(struct __sk_buff *skb, const struct headers *h,
					  struct route *r, __u32 data_len)
{
	__be16 channel_header[2] = {r->channel, bpf_htons(data_len)};
	__be32 header_word = *(__be32 *)channel_header;

	if (bpf_skb_change_tail(skb, skb->len + 4, 0))
		return TC_ACT_SHOT;
	if (move_payload(skb, PAYLOAD_OFF, PAYLOAD_OFF + 4, data_len))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, PAYLOAD_OFF, channel_header, 4, 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, UDP_CHECK_OFF, 0, header_word, CSUM_FLAGS | 4))
		return TC_ACT_SHOT;
	if (rewrite_headers(skb, h, r, sizeof(struct udphdr) + 4 + data_len))
		return TC_ACT_SHOT;
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, data_len);
	return send(skb, r);
}

SEC("tc")
int turnpike_fastpath(struct __sk_buff *skb)
{
	struct headers h;
	__be16 eth_proto;
	__u32 data_len;
	struct route *r;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_segs > 1)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2) ||
	    eth_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, IP_OFF, &h, sizeof(h)))
		return TC_ACT_UNSPEC;
	// Plain IPv4/UDP only: no options, no fragments, no trailing bytes after the datagram.
	if (h.ip.version != 4 || h.ip.ihl != 5 || h.ip.protocol != IPPROTO_UDP ||
	    (h.ip.frag_off & bpf_htons(0x3fff)) ||
	    skb->len != IP_OFF + bpf_ntohs(h.ip.tot_len) ||
	    bpf_ntohs(h.udp.len) != bpf_ntohs(h.ip.tot_len) - sizeof(struct iphdr))
		return TC_ACT_UNSPEC;
	data_len = bpf_ntohs(h.udp.len) - sizeof(struct udphdr);

	if (data_len >= 4) {
		__be16 channel_header[2];

		if (bpf_skb_load_bytes(skb, PAYLOAD_OFF, channel_header, 4))
			return TC_ACT_UNSPEC;
		__u8 first = ((__u8 *)channel_header)[0];

		if (first >= 0x40 && first <= 0x7f) {
			struct client_key key = {
				.client_ip = h.ip.saddr,
				.server_ip = h.ip.daddr,
				.client_port = h.udp.source,
				.server_port = h.udp.dest,
				.channel = channel_header[0],
			};

			r = bpf_map_lookup_elem(&to_peer, &key);
			if (!r) {  // a listener bound to 0.0.0.0 is keyed without the address
				key.server_ip = 0;
				r = bpf_map_lookup_elem(&to_peer, &key);
			}
			if (r) {
				if (bpf_ktime_get_ns() >= r->expires_ns)
					return punt(PUNT_EXPIRED);
				// Exactly one ChannelData message, unpadded; anything else is userspace's.
				if (bpf_ntohs(channel_header[1]) != data_len - 4)
					return punt(PUNT_LENGTH);
				if (data_len - 4 > MAX_DATA)
					return punt(PUNT_SIZE);
				return to_peer_path(skb, &h, r, *(__be32 *)channel_header,
						    data_len - 4);
			}
		}
	}

	struct peer_key key = {
		.peer_ip = h.ip.saddr,
		.relay_ip = h.ip.daddr,
		.peer_port = h.udp.source,
		.relay_port = h.udp.dest,
	};

	r = bpf_map_lookup_elem(&to_client, &key);
	if (!r) {  // a relay socket bound to 0.0.0.0 (behind 1:1 NAT) is keyed without the address
		key.relay_ip = 0;
		r = bpf_map_lookup_elem(&to_client, &key);
		if (!r)
			return TC_ACT_UNSPEC;
	}
	if (bpf_ktime_get_ns() >= r->expires_ns)
		return punt(PUNT_EXPIRED);
	if (data_len > MAX_DATA - 4)
		return punt(PUNT_SIZE);
	{
		__u32 mtu_len = 0;

		if (bpf_check_mtu(skb, r->ifindex, &mtu_len, 4, 0))
			return punt(PUNT_MTU);
	}
	return to_client_path(skb, &h, r, data_len);
}

char LICENSE[] SEC("license") = "GPL";
