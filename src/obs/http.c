/* obs/http.c — the HTTP endpoint, the one file that calls libmicrohttpd.
 * We bind and listen on the socket ourselves (so a bad or busy address
 * gives a message naming it and the cause) and hand it to an MHD daemon
 * with its own polling thread. Requests go through a small route table:
 * exact paths or prefixes ending in '*', each a callback that fills an sl_metrics_reply; /metrics is
 * the first route. Unknown path: 404; known path, method not GET/HEAD: 405. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "obs/metrics_impl.h"

#define MAX_ROUTES 32
/* Open connections the server holds at most (more wait in the listen
 * backlog, unaccepted): each is a file descriptor of the run's, and without
 * a bound a client that opens a thousand and leaves them idle took every
 * descriptor of a 1024 RLIMIT_NOFILE, so the run's rows failed with "Too
 * many open files". A scraper and a few browser tabs need a handful. */
#define MAX_CONNECTIONS 64
/* One client address holds at most a quarter of them: 80 idle connections
 * from one address kept a Prometheus on another from /metrics until the
 * 30 s timeout closed them. A share alone does not do: on a loopback server
 * every client is 127.0.0.1, so 16 connections that never finish their
 * request (slowloris: a header byte now and then is never idle for the
 * timeout) kept every scrape out, and 64 over four addresses held them all.
 * So a connection that has no request under way (its headers not all in, or
 * idle between requests) is closed, the oldest first, to make room for a
 * new one of its address at the share, or for anyone at the limit; only
 * requests being answered hold their place (nginx likewise reuses its idle
 * keep-alive connections when it runs out). */
#define PER_ADDRESS_SHARE 4
/* libmicrohttpd logs each malformed request. A client that sends junk (a
 * port scanner, a health check speaking another protocol) flooded the run's
 * stderr: 3,000 bad requests, 3,000 warnings among the rows' own lines. The
 * first LOG_BURST are shown, then one a LOG_EVERY_S seconds saying how many
 * were not, and the count left at the end when the server stops. */
#define LOG_BURST 5
#define LOG_EVERY_S 60

/* A connection the daemon holds (all touched on MHD's one thread). */
typedef struct held {
    bool used;
    bool busy;    /* a request of it is being answered */
    bool evicted; /* shut down to make room; MHD closes it soon */
    int fd;
    unsigned long seq; /* accept order: the oldest goes first */
    struct sockaddr_storage addr;
} held;

typedef struct route {
    char *path;
    sl_metrics_route_fn fn;
    void *user;
} route;

struct sl_metrics_server {
    sl_metrics *registry;
    struct MHD_Daemon *daemon;
    int port;
    char url[160]; /* "http://HOST:PORT", HOST as a browser can reach it */
    pthread_mutex_t mu; /* guards routes and the log's counts */
    route routes[MAX_ROUTES];
    size_t n_routes;
    unsigned logged;      /* messages shown */
    unsigned long hidden; /* messages not shown since the last one that was */
    double last_log;      /* sl_mono_s(): when the last one past the burst was shown */
    bool loopback;        /* bound to a loopback address: Host is checked */
    char *token;          /* set: every request must bring it (sl_metrics_server_start_token) */
    unsigned limit, per_address;
    held conns[MAX_CONNECTIONS];
    unsigned long accepted;
};

/* --- routes ------------------------------------------------------------------------ */

static void metrics_route(void *user, const char *path, sl_metrics_reply *reply)
{
    sl_metrics_server *s = user;
    char *text;
    size_t len;
    if (sl_metrics_render(s->registry, &text, &len) != SL_OK) {
        reply->status = 500;
        reply->body = "out of memory rendering metrics\n";
        reply->len = strlen(reply->body);
        return;
    }
    reply->content_type = SL_METRICS_CONTENT_TYPE;
    reply->body = text;
    reply->len = len;
    reply->free_body = sl_free;
}

sl_status sl_metrics_server_route(sl_metrics_server *s, const char *path,
                                  sl_metrics_route_fn fn, void *user)
{
    if (!s || !path || path[0] != '/' || !fn)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "metrics server route \"%s\": the path must start with '/' and have a "
                       "handler",
                       path ? path : "(null)");
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_routes; i++)
        if (strcmp(s->routes[i].path, path) == 0) {
            s->routes[i].fn = fn;
            s->routes[i].user = user;
            pthread_mutex_unlock(&s->mu);
            return SL_OK;
        }
    if (s->n_routes == MAX_ROUTES) {
        pthread_mutex_unlock(&s->mu);
        return sl_fail(SL_ERR_INVALID_ARG, "metrics server route %s: more than %d routes", path,
                       MAX_ROUTES);
    }
    char *copy = sl_strdup(path);
    if (!copy) {
        pthread_mutex_unlock(&s->mu);
        return sl_fail(SL_ERR_NOMEM, "out of memory adding route %s", path);
    }
    s->routes[s->n_routes++] = (route){copy, fn, user};
    pthread_mutex_unlock(&s->mu);
    return SL_OK;
}

/* --- requests ---------------------------------------------------------------------- */

static enum MHD_Result send_reply(struct MHD_Connection *conn, sl_metrics_reply *r)
{
    struct MHD_Response *resp;
    if (!r->body)
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    else if (r->free_body)
        resp = MHD_create_response_from_buffer_with_free_callback(r->len, r->body, r->free_body);
    else
        resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (r->body && r->free_body)
            r->free_body(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type : "text/plain; charset=utf-8");
    if (r->status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"sluice\"");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void static_text(sl_metrics_reply *r, int status, const char *text)
{
    r->status = status;
    r->content_type = "text/plain; charset=utf-8";
    r->body = (char *)text;
    r->len = strlen(text);
    r->free_body = NULL;
}

/* Whether a request's Host may reach a loopback-bound server: none (HTTP/1.0),
 * an IP address (either family, with or without a port), or localhost.
 * The page serves the run's captions and thumbnails: a web site the user
 * opens could rebind its own name to 127.0.0.1 (DNS rebinding) and read
 * them as same-origin; the browser then sends that name as Host, which is
 * refused. A name is never needed to reach a loopback address. */
static bool host_allowed(const char *host)
{
    if (!host)
        return true;
    char name[256];
    size_t n = strlen(host);
    if (n >= sizeof name)
        return false;
    memcpy(name, host, n + 1);
    unsigned char addr[sizeof(struct in6_addr)];
    if (name[0] == '[') { /* [v6] or [v6]:port */
        char *close = strchr(name, ']');
        if (!close || (close[1] && close[1] != ':'))
            return false;
        *close = '\0';
        return inet_pton(AF_INET6, name + 1, addr) == 1;
    }
    char *colon = strchr(name, ':');
    if (colon)
        *colon = '\0';
    if (inet_pton(AF_INET, name, addr) == 1 || strcasecmp(name, "localhost") == 0)
        return true;
    n = strlen(name);
    return n > 10 && strcasecmp(name + n - 10, ".localhost") == 0; /* RFC 6761: loopback */
}

/* Equal strings, in a time that does not tell how much of `given` was right. */
static bool same_secret(const char *given, const char *secret)
{
    size_t n = strlen(secret), m = given ? strlen(given) : 0;
    unsigned char diff = m != n;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)secret[i] ^ (unsigned char)(i < m ? given[i] : 0);
    return diff == 0;
}

/* Whether the request brings the server's token: "Authorization: Bearer
 * TOKEN" (Prometheus' authorization.credentials_file, curl -H), or
 * ?token=TOKEN (a browser opening the live page, whose script passes it
 * on to what it fetches). */
static bool token_given(struct MHD_Connection *conn, const char *token)
{
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        if (same_secret(auth, token))
            return true;
    }
    return same_secret(MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token"), token);
}

/* Exact, or a prefix when the route ends in '*'. */
static bool route_matches(const char *pattern, const char *url)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, url, n - 1) == 0;
    return strcmp(pattern, url) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    sl_metrics_server *s = cls;
    sl_metrics_route_fn fn = NULL;
    void *user = NULL;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context)
        ((held *)ci->socket_context)->busy = true;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_routes && !fn; i++)
        if (route_matches(s->routes[i].path, url)) {
            fn = s->routes[i].fn;
            user = s->routes[i].user;
        }
    pthread_mutex_unlock(&s->mu);

    sl_metrics_reply r = {200, "text/plain; charset=utf-8", NULL, 0, NULL};
    if (s->loopback &&
        !host_allowed(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST)))
        static_text(&r, 403,
                    "403: this server listens on loopback; ask it by address (127.0.0.1, [::1]) "
                    "or as localhost, not by another host name\n");
    else if (s->token && !token_given(conn, s->token))
        static_text(&r, 401,
                    "401: this server asks for the token of --metrics-token-file: send "
                    "'Authorization: Bearer TOKEN', or open /?token=TOKEN\n");
    else if (!fn)
        static_text(&r, 404, "404 not found\n");
    else if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        static_text(&r, 405, "405 method not allowed: use GET\n");
    else
        fn(user, url, &r);
    return send_reply(conn, &r);
}

/* --- connections ------------------------------------------------------------------- */

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (a->ss_family != b->sa_family)
        return false;
    if (b->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    if (b->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return false;
}

/* Shuts down the oldest held connection without a request under way (of
 * `addr`'s host, or any when NULL); false when every one is busy. */
static bool evict_oldest_idle(sl_metrics_server *s, const struct sockaddr *addr)
{
    held *oldest = NULL;
    for (size_t i = 0; i < MAX_CONNECTIONS; i++) {
        held *h = &s->conns[i];
        if (h->used && !h->busy && !h->evicted && (!addr || same_host(&h->addr, addr)) &&
            (!oldest || h->seq < oldest->seq))
            oldest = h;
    }
    if (!oldest)
        return false;
    shutdown(oldest->fd, SHUT_RDWR); /* MHD sees the end and closes it */
    oldest->evicted = true;
    return true;
}

/* A new connection from addr: room is made for it (see PER_ADDRESS_SHARE);
 * refused only when its address's share is all busy answering. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    sl_metrics_server *s = cls;
    unsigned live = 0, mine = 0;
    for (size_t i = 0; i < MAX_CONNECTIONS; i++)
        if (s->conns[i].used && !s->conns[i].evicted) {
            live++;
            mine += same_host(&s->conns[i].addr, addr);
        }
    if (mine >= s->per_address && !evict_oldest_idle(s, addr))
        return MHD_NO;
    /* MHD refuses at the limit before it asks; one slot stays free. */
    if (live + 1 >= s->limit)
        evict_oldest_idle(s, NULL);
    return MHD_YES;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    sl_metrics_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (*socket_context)
            ((held *)*socket_context)->used = false;
        return;
    }
    const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ad = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    for (size_t i = 0; fd && ad && i < MAX_CONNECTIONS; i++) {
        held *h = &s->conns[i];
        if (h->used)
            continue;
        *h = (held){.used = true, .fd = fd->connect_fd, .seq = s->accepted++};
        size_t len = ad->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                             : sizeof(struct sockaddr_in);
        memcpy(&h->addr, ad->client_addr, len);
        *socket_context = h;
        return;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)con_cls, (void)toe;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context)
        ((held *)ci->socket_context)->busy = false;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    sl_metrics_server *s = cls;
    double now = sl_mono_s();
    unsigned long hidden = 0;
    pthread_mutex_lock(&s->mu);
    bool show = s->logged < LOG_BURST || now - s->last_log >= LOG_EVERY_S;
    if (show) {
        hidden = s->hidden;
        s->hidden = 0;
        s->logged++;
        s->last_log = now;
    } else {
        s->hidden++;
    }
    bool burst_ends = show && s->logged == LOG_BURST;
    pthread_mutex_unlock(&s->mu);
    if (!show)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    sl_log(SL_LOG_WARN, "metrics server: %s%s", line,
           burst_ends ? " (further messages of the server: at most one a minute)" : "");
    if (hidden)
        sl_log(SL_LOG_WARN, "metrics server: %lu more messages since the last one not shown",
               hidden);
}

/* --- start and stop ------------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" into host (may be "") and port. */
static sl_status parse_address(const char *address, char *host, size_t host_cap, char *port,
                               size_t port_cap)
{
    const char *colon;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (!close || close[1] != ':')
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metrics address \"%s\": expected [IPv6]:PORT", address);
        if ((size_t)(close - address - 1) >= host_cap)
            return sl_fail(SL_ERR_INVALID_ARG, "metrics address \"%s\": host too long", address);
        memcpy(host, address + 1, (size_t)(close - address - 1));
        host[close - address - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (!colon)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metrics address \"%s\": expected HOST:PORT (e.g. 127.0.0.1:9090, "
                           "port 0 for any free port)",
                           address);
        if ((size_t)(colon - address) >= host_cap)
            return sl_fail(SL_ERR_INVALID_ARG, "metrics address \"%s\": host too long", address);
        memcpy(host, address, (size_t)(colon - address));
        host[colon - address] = '\0';
        if (strchr(host, ':'))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metrics address \"%s\": write an IPv6 host in brackets, "
                           "[::1]:9090",
                           address);
    }
    const char *p = colon + 1;
    size_t n = strlen(p);
    bool digits = n > 0 && n < port_cap && n <= 5;
    for (size_t i = 0; digits && i < n; i++)
        digits = p[i] >= '0' && p[i] <= '9';
    if (!digits || atol(p) > 65535)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "metrics address \"%s\": the port \"%s\" is not a number from 0 to 65535",
                       address, p);
    memcpy(port, p, n + 1);
    return SL_OK;
}

sl_status sl_obs_address_check(const char *address)
{
    char host[256], port[8];
    return parse_address(address, host, sizeof host, port, sizeof port);
}

/* What the bound address is, read once whatever its family: v4-mapped v6
 * addresses count as the v4 ones they carry. */
typedef struct {
    int port;
    bool v6, any, loopback;
} bound_addr;

static bound_addr bound_addr_of(const struct sockaddr_storage *ss)
{
    bound_addr b = {.v6 = ss->ss_family == AF_INET6};
    if (b.v6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        const struct in6_addr *a = &in6->sin6_addr;
        b.port = ntohs(in6->sin6_port);
        b.any = IN6_IS_ADDR_UNSPECIFIED(a);
        b.loopback = IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    } else {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        b.port = ntohs(in->sin_port);
        b.any = in->sin_addr.s_addr == htonl(INADDR_ANY);
        b.loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    return b;
}

/* The URL of the bound socket: its numeric host, so it is true whatever
 * name was asked for; the any-address is reachable on loopback, so the URL
 * names that; a v6 host is in brackets, its zone's '%' written %25. */
static void bound_url(const struct sockaddr_storage *ss, socklen_t len, bound_addr b, char *url,
                      size_t cap)
{
    char host[64]; /* a numeric v6 host and its zone */
    if (b.any)
        snprintf(host, sizeof host, b.v6 ? "::1" : "127.0.0.1");
    else if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, NULL, 0,
                         NI_NUMERICHOST) != 0)
        snprintf(host, sizeof host, b.v6 ? "::1" : "127.0.0.1");
    char *zone = strchr(host, '%');
    if (zone)
        *zone++ = '\0';
    snprintf(url, cap, "http://%s%s%s%s%s:%d", b.v6 ? "[" : "", host, zone ? "%25" : "",
             zone ? zone : "", b.v6 ? "]" : "", b.port);
}

/* A bound, listening socket for `address` into *fd_out. */
static sl_status listen_on(const char *address, int *fd_out, int *bound_port, bool *loopback,
                           char *url, size_t url_cap)
{
    char host[256], port[8];
    sl_status st = parse_address(address, host, sizeof host, port, sizeof port);
    if (st != SL_OK)
        return st;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : "0.0.0.0", port, &hints, &res);
    if (gai != 0)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "metrics address \"%s\": cannot resolve host \"%s\": %s", address, host,
                       gai_strerror(gai));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st = sl_fail(SL_ERR_IO, "metrics address \"%s\": socket: %s", address, strerror(errno));
        freeaddrinfo(res);
        return st;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        st = sl_fail(SL_ERR_IO, "metrics address \"%s\": cannot listen: %s", address,
                     strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return st;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        st = sl_fail(SL_ERR_IO, "metrics address \"%s\": getsockname: %s", address,
                     strerror(errno));
        close(fd);
        return st;
    }
    bound_addr b = bound_addr_of(&ss);
    *bound_port = b.port;
    *loopback = b.loopback;
    bound_url(&ss, sl, b, url, url_cap);
    *fd_out = fd;
    return SL_OK;
}

/* MAX_CONNECTIONS, or less under a low RLIMIT_NOFILE: at most an eighth
 * of the descriptors go to monitoring clients, the rest stay the run's. */
static unsigned connection_limit(void)
{
    struct rlimit rl;
    unsigned limit = MAX_CONNECTIONS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / 8 < limit)
        limit = rl.rlim_cur / 8 > 2 ? (unsigned)(rl.rlim_cur / 8) : 2;
    return limit;
}

sl_status sl_metrics_server_start(sl_metrics *m, const char *address, sl_metrics_server **server)
{
    return sl_metrics_server_start_token(m, address, NULL, server);
}

sl_status sl_metrics_server_start_token(sl_metrics *m, const char *address, const char *token,
                                        sl_metrics_server **server)
{
    if (!server)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_metrics_server_start: NULL server");
    *server = NULL;
    if (!m || !address)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_metrics_server_start: NULL registry or address");
    if (token && !*token)
        return sl_fail(SL_ERR_INVALID_ARG, "metrics server: an empty token would let anyone in");
    sl_metrics_server *s = sl_calloc(1, sizeof *s);
    if (!s)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the metrics server");
    s->registry = m;
    pthread_mutex_init(&s->mu, NULL);
    if (token && !(s->token = sl_strdup(token))) {
        sl_metrics_server_stop(s);
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the metrics server");
    }
    sl_status st = sl_metrics_server_route(s, "/metrics", metrics_route, s);
    if (st != SL_OK) {
        sl_metrics_server_stop(s);
        return st;
    }
    int fd = -1;
    if ((st = listen_on(address, &fd, &s->port, &s->loopback, s->url, sizeof s->url)) != SL_OK) {
        sl_metrics_server_stop(s);
        return st;
    }
    s->limit = connection_limit();
    s->per_address = s->limit / PER_ADDRESS_SHARE > 0 ? s->limit / PER_ADDRESS_SHARE : 1;
    s->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, on_accept, s, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, s->limit,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        close(fd);
        sl_metrics_server_stop(s);
        return sl_fail(SL_ERR_IO, "metrics address \"%s\": libmicrohttpd could not start",
                       address);
    }
    sl_log(SL_LOG_INFO, "metrics: serving %s/metrics (asked for \"%s\")%s", s->url, address,
           s->token ? ", to requests that bring its token" : "");
    *server = s;
    return SL_OK;
}

int sl_metrics_server_port(const sl_metrics_server *s) { return s ? s->port : 0; }

const char *sl_metrics_server_url(const sl_metrics_server *s) { return s ? s->url : ""; }

void sl_metrics_server_stop(sl_metrics_server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon); /* closes the listening socket too */
    if (s->hidden)
        sl_log(SL_LOG_WARN, "metrics server: %lu more messages not shown", s->hidden);
    for (size_t i = 0; i < s->n_routes; i++)
        sl_free(s->routes[i].path);
    if (s->token) {
        explicit_bzero(s->token, strlen(s->token)); /* not left in freed memory */
        sl_free(s->token);
    }
    pthread_mutex_destroy(&s->mu);
    sl_free(s);
}
