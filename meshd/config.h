/* meshd's configuration: command-line flags, and an optional config file with the same keys.
 * Flags win over the file. The file holds one `key = value` per line (the flag's name without
 * the dashes), '#' starts a comment, and repeatable keys (join, label) may repeat. */
#ifndef FOGMESH_MESHD_CONFIG_H
#define FOGMESH_MESHD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "err.h"
#include "gossip.h"
#include "link.h"
#include "log.h"

#define CONFIG_NAME_MAX     64
#define CONFIG_PATH_MAX     1024
#define CONFIG_JOIN_MAX     16
#define CONFIG_LABEL_MAX    32
#define CONFIG_LABEL_KEYMAX 63
#define CONFIG_LABEL_VALMAX 127
#define MESH_DEFAULT_PORT   7946
#define MESH_DEFAULT_DATA   "/var/lib/fogmesh"
#define MESH_DEFAULT_REAP   (24ull * 3600 * 1000)

struct config_label {
    char key[CONFIG_LABEL_KEYMAX + 1];
    char value[CONFIG_LABEL_VALMAX + 1];
};

struct meshd_config {
    char name[CONFIG_NAME_MAX + 1];
    char data_dir[CONFIG_PATH_MAX];
    struct mesh_addr bind;
    struct mesh_addr advertise; /* family 0 until resolved by config_finish() */
    char key_file[CONFIG_PATH_MAX];
    struct mesh_addr join[CONFIG_JOIN_MAX];
    size_t njoin;
    char api_socket[CONFIG_PATH_MAX];
    struct config_label labels[CONFIG_LABEL_MAX];
    size_t nlabels;
    char engine[CONFIG_PATH_MAX];
    enum log_level log_level;
    enum gossip_profile gossip_profile;
    uint64_t reap_after_ms;       /* dead and left members leave the table after this long */
    unsigned raft_voters;         /* target voter count (odd; the leader keeps it) */
    double raft_timing;           /* 1 = lan, 5 = wan, or a multiplier */
    uint64_t reschedule_after_ms; /* replicas on a node dead this long move elsewhere */
    uint8_t link_ciphers; /* --link-cipher: LINK_CIPHER_AUTO, or LINK_CIPHER_CHACHAPOLY only */
    char config_file[CONFIG_PATH_MAX];
};

enum config_action { CONFIG_RUN, CONFIG_HELP, CONFIG_VERSION };

/* Parses argv (and the file named by --config) into cfg, filling defaults for what is not set.
 * Returns 0 with *ret_action, or a negative code with err saying what is wrong in one line. */
int config_parse(int argc, char **argv, struct meshd_config *cfg, enum config_action *ret_action,
                 struct mesh_err *err);

/* The usage text printed by --help. */
const char *config_usage(void);

/* Parses a duration such as "500ms", "30s", "10m", "24h" (a bare number is seconds). */
int config_duration_parse(const char *s, uint64_t *ret_ms);

/* Validates a node name: 1..64 of [A-Za-z0-9._-], starting with a letter or digit. */
bool config_name_valid(const char *name);

#endif
