/* libFuzzer harness for meshd's config file parser (meshd/config.h): the input is written to a
 * scratch file and parsed by config_parse as `meshd --config FILE`. When the input starts with
 * a line "#!args ...", that line (a comment to the parser) also gives extra command-line flags,
 * separated by spaces, so that flags and file meet ("flags win over the file").
 * Checks: no crash, no leak, no descriptor left open, and a successful parse yields a config
 * whose strings are terminated and whose tables are within their bounds.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Imeshd -Inetlink \
 *       tests/fuzz/fuzz_api_config.c meshd/config.c meshd/gossip.c ... -o fuzz_api_config */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define MAX_ARGS 16

static char path[64];

static void cleanup(void)
{
    if (path[0])
        unlink(path);
}

static int scratch_file(void)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz_api_config.XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
        atexit(cleanup);
    }
    return open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
}

/* The lowest free descriptor: a descriptor leaked by the parser changes it. */
static int lowest_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    close(fd);
    return fd;
}

static void check_str(const char *s, size_t cap)
{
    if (!memchr(s, '\0', cap))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = scratch_file();
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    close(fd);

    char *argv[MAX_ARGS + 4];
    int argc = 0;
    argv[argc++] = "meshd";
    argv[argc++] = "--config";
    argv[argc++] = path;
    char *args = NULL;
    if (size > 7 && memcmp(data, "#!args ", 7) == 0) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t len = (nl ? (size_t)(nl - data) : size) - 7;
        args = malloc(len + 1);
        if (!args)
            abort();
        memcpy(args, data + 7, len);
        args[len] = '\0';
        for (char *save = NULL, *tok = strtok_r(args, " ", &save); tok && argc < MAX_ARGS + 3;
             tok = strtok_r(NULL, " ", &save))
            if (!strstr(tok, "config")) /* another --config could name /dev/stdin */
                argv[argc++] = tok;
    }
    argv[argc] = NULL;

    int before = lowest_fd();
    struct meshd_config *cfg = malloc(sizeof *cfg);
    if (!cfg)
        abort();
    enum config_action action;
    struct mesh_err err = {0};
    int rc = config_parse(argc, argv, cfg, &action, &err);
    if (lowest_fd() != before)
        abort(); /* a descriptor leaked */
    if (rc < 0) {
        if (err.code != rc || !memchr(err.msg, '\0', sizeof err.msg) || !err.msg[0])
            abort();
    } else if (action == CONFIG_RUN) {
        check_str(cfg->name, sizeof cfg->name);
        check_str(cfg->data_dir, sizeof cfg->data_dir);
        check_str(cfg->key_file, sizeof cfg->key_file);
        check_str(cfg->api_socket, sizeof cfg->api_socket);
        check_str(cfg->engine, sizeof cfg->engine);
        check_str(cfg->config_file, sizeof cfg->config_file);
        if (!config_name_valid(cfg->name) || cfg->njoin > CONFIG_JOIN_MAX ||
            cfg->nlabels > CONFIG_LABEL_MAX || !cfg->advertise.family ||
            (cfg->link_ciphers != LINK_CIPHER_AUTO && cfg->link_ciphers != LINK_CIPHER_CHACHAPOLY))
            abort();
        for (size_t i = 0; i < cfg->nlabels; i++) {
            check_str(cfg->labels[i].key, sizeof cfg->labels[i].key);
            check_str(cfg->labels[i].value, sizeof cfg->labels[i].value);
        }
    }
    free(cfg);
    free(args);
    return 0;
}
