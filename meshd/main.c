/* meshd: one node of a fogmesh mesh. Parses the configuration, builds the node and runs its
 * loop. Exit codes: 0 after a clean shutdown, 2 for bad configuration or a failed start (one
 * line on stderr says why; nothing is left half-started), 1 when the loop fails later. */
#include <curl/curl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>

#include "config.h"
#include "node.h"
#include "version.h"

int main(int argc, char **argv)
{
    struct meshd_config cfg;
    enum config_action action;
    struct mesh_err err = {0};
    struct node node;

    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        fprintf(stderr, "meshd: libsodium failed to initialise\n");
        return 2;
    }
    if (config_parse(argc, argv, &cfg, &action, &err) < 0) {
        fprintf(stderr, "meshd: %s\n", err.msg);
        return 2;
    }
    if (action == CONFIG_HELP) {
        fputs(config_usage(), stdout);
        return 0;
    }
    if (action == CONFIG_VERSION) {
        printf("meshd %s\n", FOGMESH_VERSION);
        return 0;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT); /* the engine client's libcurl (runtime/engine.h) */
    if (node_start(&node, &cfg, &err) < 0) {
        fprintf(stderr, "meshd: %s\n", err.msg);
        return 2;
    }
    int code = node_run(&node);
    node_close(&node);
    curl_global_cleanup();
    return code;
}
