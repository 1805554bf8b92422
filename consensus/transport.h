/* canonical/raft's stream transport (struct raft_uv_transport, raft/uv.h) over mesh streams
 * (netlink/peers.h), so Raft traffic is encrypted and authenticated like all mesh traffic.
 *
 * Raft reads and writes a uv_stream_t itself, in plaintext. For every raft connection this
 * transport makes a socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): raft gets one end as a
 * uv_pipe_t on its libuv loop, and the transport pumps the other end to and from a peers stream
 * of channel type TRANSPORT_CHAN_RAFT (control priority), in both directions:
 *   - the pump's end is a non-blocking fd watched by libevent on the peers' event_base, not a
 *     uv_poll: the peers stream, its link and socket all live on that base, so a byte raft
 *     writes is read, encrypted and flushed in the same libevent pass, and tearing a pump down
 *     is synchronous (event_free, close) with no libuv close-callback chain to wait for.
 *   - backpressure both ways: the pump stops reading raft's bytes while the stream does not
 *     take more (peers_stream_send short, until on_writable), and returns the peer's credit
 *     (peers_stream_consume) only for bytes written into the socketpair, so a raft that does
 *     not read stops the remote writer through the link's flow control. What the pump holds is
 *     bounded by one read buffer and one channel window.
 *
 * Raft addresses are mesh addresses: the "host:port" string a node advertises on the mesh.
 *
 * The handshake. raft's own TCP transport (src/uv_tcp_connect.c, uv_tcp_listen.c) sends, from
 * the connector, a preamble [u64 protocol = 1, u64 server id, u64 address length] and the
 * NUL-padded address (little-endian, 8-byte aligned), and its listener reads it before calling
 * accept_cb(id, address, stream): the handshake lives in the transport, not in raft_uv. Here
 * the same bytes travel as the stream's open payload, so the listener has them with the OPEN
 * and the raft byte stream carries raft's messages only. The listener accepts a stream only
 * when the address in the handshake is the advertised mesh address of the link it came on (a
 * node cannot speak for another node's address), and the id is not 0.
 *
 * Guarding raft. raft_uv trusts its peers: its decoders read fixed-size headers without checking
 * their length and allocate whatever a message preamble asks for. The listener side therefore
 * checks the framing of every message before raft sees its last header byte (type, header
 * length per type, entry table and payload sizes, the configuration of InstallSnapshot), and
 * resets the stream at the first bad byte. The connector side never receives data (raft's
 * listener never writes): data there resets the stream too.
 *
 * Closing: t->close cancels pending connects (their callback fires with RAFT_CANCELED, from the
 * loop), resets every stream, closes the pump ends (raft's pipes see EOF or EPIPE), stops
 * accepting, and fires close_cb once, from the loop, after all of that. Raft closes its own
 * pipe handles (it owns them; they are allocated with raft_malloc as raft frees them with
 * raft_free). A write into a pipe whose other end is gone raises SIGPIPE: the process must
 * ignore it (meshd does), as with raft's TCP transport.
 *
 * Relaying (optional: only with a next_hop hook in the config). Mesh links can be blocked
 * between two nodes that both reach a third; service traffic then follows the routes of
 * netlink/route.h, and so can Raft's connections. When the hook says the next hop towards a
 * raft address is another node, the connector opens a stream of channel type
 * TRANSPORT_CHAN_RAFT_RELAY to that next hop, whose open payload is the mesh's one relay
 * header (netlink/relay.h: version, hops_left, type and max_reply both 0 for a stream, the
 * destination's family, ip and port; big-endian) followed by the raft handshake
 * (transport_relay_encode).
 *
 * A node that accepts a relay stream is either the destination (the address its raft runs
 * on): it accepts it as a raft connection, with the same listener-side framing checks as a
 * direct one; or it asks its own hook for the next hop and splices the stream to a new relay
 * stream there (netlink/tunnel.h, tunnel_accept_relay) with one hop less, refusing at 0 hops,
 * when it has no route, or when the route leads back to where the stream came from. Relays
 * hold at most TRANSPORT_RELAY_DEFAULT_MAX (cfg.max_relays) spliced connections at once, each
 * bounded by the tunnel's window. Every second the connector checks its connections against
 * the hook and resets those whose first hop changed, so that raft reconnects along the new
 * route instead of waiting, on a path that went silent, for the link's keepalive to fail.
 *
 * The trust model of relayed connections. A direct stream's handshake must name the address
 * of the link it came on. A relayed stream comes on the link of the last relay, so that check
 * cannot hold: the destination accepts the address the handshake claims, from any mesh member.
 * That is the mesh's existing trust boundary: every member holds the mesh key and is
 * authenticated by the Noise handshake of every link on the way, nobody outside can open or
 * inject into a relay stream, and raft itself only uses the claimed id/address to route
 * replies (which it sends on its own outgoing connections). A compromised member could
 * already disrupt Raft in many other ways (it is a voter or could become one). The direct
 * check is kept for direct streams.
 *
 * No logging here; failures reach raft as statuses and t->errmsg, and counters in
 * transport_stats. */
#ifndef FOGMESH_CONSENSUS_TRANSPORT_H
#define FOGMESH_CONSENSUS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <raft.h>
#include <raft/uv.h>

#include "addr.h"
#include "err.h"
#include "link.h"
#include "peers.h"
#include "relay.h"

#define TRANSPORT_CHAN_RAFT                  (LINK_CHAN_CONTROL | 16)
#define TRANSPORT_CHAN_RAFT_RELAY            (LINK_CHAN_CONTROL | 17)
#define TRANSPORT_RELAY_VERSION              RELAY_HDR_VERSION
#define TRANSPORT_RELAY_HEADER               RELAY_HDR_LEN /* netlink/relay.h */
#define TRANSPORT_RELAY_DEFAULT_HOPS         8             /* relays a connection may cross */
#define TRANSPORT_RELAY_DEFAULT_MAX          64 /* relayed connections through a node at once */
#define TRANSPORT_HANDSHAKE_PROTOCOL         1  /* raft's UV__TCP_HANDSHAKE_PROTOCOL */
#define TRANSPORT_DEFAULT_CONNECT_TIMEOUT_MS 3000
#define TRANSPORT_DEFAULT_MAX_MESSAGE        (64u << 20) /* payload bytes of one raft message */
#define TRANSPORT_MAX_HEADER                 (1u << 20)  /* header bytes of one raft message */
#define TRANSPORT_LINGER_MS                  10000 /* after raft closed its end, wait this long for the FIN */

/* The next hop on the route to the node whose mesh address is dest: 0 with *ret_hop (dest
 * itself when the route is direct), or a negative code when no route is known. Called from
 * the event loop, synchronously; must not call back into the transport. */
typedef int (*transport_next_hop_fn)(void *ud, const struct mesh_addr *dest,
                                     struct mesh_addr *ret_hop);

struct transport_config {
    struct event_base *base;     /* the peers' base; the pumps run on it */
    uv_loop_t *loop;             /* raft's loop; the pipes live on it */
    struct peers *peers;         /* borrowed; must outlive the transport */
    uint16_t chan_type;          /* 0: TRANSPORT_CHAN_RAFT */
    uint64_t connect_timeout_ms; /* 0: TRANSPORT_DEFAULT_CONNECT_TIMEOUT_MS */
    size_t max_message;          /* 0: TRANSPORT_DEFAULT_MAX_MESSAGE */
    /* Relaying (see above); with next_hop NULL the transport neither relays nor accepts
     * relayed connections, and connects directly, as without these fields. */
    transport_next_hop_fn next_hop;
    void *next_hop_ud;
    uint16_t relay_chan_type; /* 0: TRANSPORT_CHAN_RAFT_RELAY */
    size_t max_relays;        /* 0: TRANSPORT_RELAY_DEFAULT_MAX */
    uint8_t relay_hops;       /* 0: TRANSPORT_RELAY_DEFAULT_HOPS */
};

struct transport_stats {
    uint64_t connects, connects_failed, accepted, refused;
    uint64_t bad_frames; /* listener streams reset for raft framing errors */
    uint64_t bytes_to_raft, bytes_from_raft;
    uint64_t connects_relayed; /* of connects: through a next hop */
    uint64_t accepted_relayed; /* of accepted: came through relays */
    uint64_t relayed;          /* connections this node passed on to a next hop */
    uint64_t relay_refused;    /* relay streams refused (malformed, no hops, no route, full) */
    uint64_t rerouted;         /* outgoing connections reset because their route changed */
};

/* Fills t (keeping t->data, which raft_uv_init sets) with this implementation: pass t to
 * raft_uv_init. cfg is copied. Returns 0, MESH_EINVAL or MESH_ENOMEM (err says why); on failure
 * nothing is allocated. */
int transport_init(struct raft_uv_transport *t, const struct transport_config *cfg,
                   struct mesh_err *err);

/* Frees the implementation: after t->close's callback fired (then the peers may already be
 * freed), or when raft never started it (then before the peers). Accepts a transport that
 * transport_init failed on or never saw. */
void transport_free(struct raft_uv_transport *t);

const struct transport_stats *transport_stats(const struct raft_uv_transport *t);

/* The framing check of the listener side, exposed for tests and the fuzz harness: feed raft's
 * byte stream in any split; returns 0 while it is well formed, MESH_EMALFORMED or
 * MESH_ETOOBIG (and keeps returning it) at the first bad byte. */
struct transport_framecheck {
    int phase; /* preamble, header, payload */
    uint8_t pre[16];
    size_t pre_n;
    uint64_t type, hlen;
    uint8_t *hdr;
    size_t hdr_n;
    uint64_t payload_left;
    size_t max_message;
    int error;
};

void transport_framecheck_init(struct transport_framecheck *f, size_t max_message);
int transport_framecheck_feed(struct transport_framecheck *f, const uint8_t *data, size_t len);
void transport_framecheck_fini(struct transport_framecheck *f);

/* Encodes raft's connection handshake (see above) for id and address into buf; returns its
 * length, or 0 when it does not fit in cap bytes. */
size_t transport_handshake_encode(uint64_t id, const char *address, uint8_t *buf, size_t cap);
/* Decodes one: 0 with *ret_id and ret_address (NUL-terminated, at most cap bytes), or
 * MESH_EMALFORMED. */
int transport_handshake_decode(const uint8_t *buf, size_t len, uint64_t *ret_id, char *ret_address,
                               size_t cap);

/* The open payload of a relay stream (see above). */
struct transport_relay {
    uint8_t hops_left;
    struct mesh_addr dest;
    uint64_t id;                    /* the connector's raft id, from the handshake */
    char address[MESH_ADDR_STRLEN]; /* the connector's raft address, from the handshake */
    const uint8_t *hs;              /* the raft handshake, inside the decoded buffer */
    size_t hs_len;
};

/* Encodes a relay payload: the header for dest and hops_left, then the handshake hs (copied).
 * Returns its length, or 0 when dest is not an address or it does not fit in cap bytes. */
size_t transport_relay_encode(uint8_t hops_left, const struct mesh_addr *dest, const uint8_t *hs,
                              size_t hs_len, uint8_t *buf, size_t cap);
/* Decodes one, the embedded handshake included (its address at most MESH_ADDR_STRLEN - 1
 * characters): 0, MESH_EUNSUPPORTED for another version, MESH_EMALFORMED for anything else
 * unexpected. ret is untouched on failure; ret->hs points into buf. */
int transport_relay_decode(const uint8_t *buf, size_t len, struct transport_relay *ret);

#endif
