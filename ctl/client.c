#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "version.h"

#define REPLY_MAX (16u << 20)

struct reply {
    char *data;
    size_t len;
    int too_big;
    CURL *curl;
    FILE *sink; /* client_stream: a 2xx body goes here as it comes */
    int sink_failed;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct reply *r = ud;
    size_t n = size * nmemb;
    long status = 0;
    if (r->sink && curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status >= 200 && status <= 299) {
        if (fwrite(ptr, 1, n, r->sink) != n || fflush(r->sink) != 0) {
            r->sink_failed = 1;
            return 0;
        }
        return n;
    }
    if (r->len + n > REPLY_MAX) {
        r->too_big = 1;
        return 0;
    }
    char *p = realloc(r->data, r->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + r->len, ptr, n);
    r->data = p;
    r->len += n;
    r->data[r->len] = '\0';
    return n;
}

/* Why the socket cannot be reached, in words that say what to do. */
static int unreachable(const struct client *c, struct mesh_err *err)
{
    const char *why;
    struct stat st;
    if (stat(c->socket_path, &st) != 0)
        why = errno == ENOENT ? "no such file" : strerror(errno);
    else if (!S_ISSOCK(st.st_mode))
        why = "not a socket";
    else if (access(c->socket_path, R_OK | W_OK) != 0)
        why = "permission denied (run as the user that runs meshd)";
    else
        why = "connection refused";
    return mesh_errf(err, MESH_EIO,
                     "cannot reach meshd at %s: %s — is meshd running? use --socket or "
                     "MESH_SOCKET",
                     c->socket_path, why);
}

/* One request; the reply body is collected in *r (or streamed to r->sink). */
static int perform(const struct client *c, const char *method, const char *path, const json_t *body,
                   struct reply *r, long *ret_status, struct mesh_err *err)
{
    char url[2048];
    struct curl_slist *headers = NULL;
    char *payload = NULL;
    int rc = 0;

    CURL *curl = curl_easy_init();
    if (!curl)
        return mesh_errf(err, MESH_ENOMEM, "cannot initialise libcurl");
    r->curl = curl;
    snprintf(url, sizeof url, "http://meshd%s", path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    /* CURLOPT_TIMEOUT_MS 0 means none. */
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     c->timeout_ms > 0   ? c->timeout_ms
                     : c->timeout_ms < 0 ? 0L
                                         : 30000L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "meshctl/" FOGMESH_VERSION);
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        if (!payload) {
            rc = mesh_errf(err, MESH_ENOMEM, "cannot encode the request");
            goto out;
        }
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    }

    CURLcode cc = curl_easy_perform(curl);
    if (cc == CURLE_COULDNT_CONNECT) {
        rc = unreachable(c, err);
        goto out;
    }
    if (cc != CURLE_OK) {
        rc = mesh_errf(err, MESH_EIO, "request to meshd at %s failed: %s%s", c->socket_path,
                       r->sink_failed ? "cannot write the output" : curl_easy_strerror(cc),
                       r->too_big ? " (reply too large)" : "");
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    *ret_status = status;
out:
    free(payload);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return rc;
}

int client_call(const struct client *c, const char *method, const char *path, const json_t *body,
                long *ret_status, json_t **ret_body, struct mesh_err *err)
{
    struct reply r = {0};
    int rc = perform(c, method, path, body, &r, ret_status, err);
    if (rc == 0)
        *ret_body = r.len ? json_loadb(r.data, r.len, 0, NULL) : NULL;
    free(r.data);
    return rc;
}

int client_stream(const struct client *c, const char *path, FILE *out, long *ret_status,
                  json_t **ret_body, struct mesh_err *err)
{
    struct reply r = {.sink = out};
    int rc = perform(c, "GET", path, NULL, &r, ret_status, err);
    if (rc == 0)
        *ret_body = r.len ? json_loadb(r.data, r.len, 0, NULL) : NULL;
    free(r.data);
    return rc;
}
