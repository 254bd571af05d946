/* stage/lua_stage.c — see stage.h: a user stage written in Lua 5.4
 * (docs/stages.md). The script is compiled and run once at open in a
 * throwaway state (a script that does not load or defines no process() is
 * refused there); then each worker has its own lua_State, made by init() on
 * the worker's thread and used by that thread alone, so states share
 * nothing and need no lock. A row reaches Lua as a small userdata made for
 * each process(row) call and cleared when it returns: a script that keeps
 * it gets an error on its next use, not a pointer into a freed row.
 *
 * A call that runs past the stage's time_limit is stopped: a count hook
 * (every HOOK_EVERY instructions, on the state's own thread, inherited by
 * its coroutines) compares the clock with the call's deadline and raises
 * the error. An active hook makes the VM check every instruction: bench/
 * stages measures 1.42x on plain Lua arithmetic, 1.06x on the tags example
 * (time in C functions, which it neither slows nor interrupts);
 * time_limit below 0 sets no hook. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/json.h"
#include "core/log.h"
#include "stage/stage.h"

/* What one worker's Lua may allocate, in MB: a script that leaks, or keeps
 * state proportional to its input, fails its rows with "not enough memory"
 * here rather than taking the machine's memory. Tests set a smaller one
 * (core/fault.h, lua.memory_mb). */
#define LUA_MEMORY_LIMIT_MB 1024
/* Nesting of tables a value may have to go to or come from JSON. */
#define JSON_DEPTH 64

#define ROW_MT "sluice.row"
#define COLUMNS_MT "sluice.columns"
#define IMAGE_MT "sluice.image"
#define OBJECT_MT "sluice.object" /* a table to write as a JSON object even empty */

/* A call's time limit when the stage names none. */
#define DEFAULT_TIME_LIMIT_S 60.0

/* The instructions between two looks at the clock. */
#define HOOK_EVERY 1000

/* A state's calls' time limit. */
typedef struct lclock {
    double limit_s;
    int64_t deadline_ns; /* the call in progress ends by then (CLOCK_MONOTONIC); 0: none */
} lclock;

typedef struct lua_stage {
    char *name;
    char *path;
    char *short_path; /* how Lua names a long path in messages ("...tail"); NULL: as is */
    json_t *config; /* an object; read (never changed) by every worker's init() */
    double time_limit_s;
} lua_stage;

/* A row as Lua sees it; row is NULL once its process() call returned. */
typedef struct lrow {
    sl_row *row;
    bool keep; /* named in what process() returned */
} lrow;

/* A state's allocations: what it holds and may hold. */
typedef struct lmem {
    size_t used, limit;
} lmem;

typedef struct lworker {
    const lua_stage *ls;
    lua_State *L;
    lclock clock;
    int worker;
    lmem mem;               /* bytes the state holds (the allocator counts them) */
    int close_ref;          /* close() or LUA_NOREF */
    int kids_ref;           /* a table anchoring the copies made in this call */
    lrow **kids;            /* the copies made in this call (sluice.copy) */
    size_t n_kids, cap_kids;
    lrow *cur;              /* the handle of the row process() is called on now */
    sl_row *parent;         /* that row */
} lworker;

/* Stack slots of a state between calls. */
enum { SLOT_MSGH = 1, SLOT_PROCESS };

/* --- the state -------------------------------------------------------------------- */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lmem *mem = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        sl_free(ptr);
        mem->used -= old;
        return NULL;
    }
    if (nsize > old && mem->used + (nsize - old) > mem->limit)
        return NULL;
    void *p = sl_realloc(ptr, nsize);
    if (p)
        mem->used = mem->used - old + nsize;
    return p;
}

/* A new state whose allocations mem counts and limits. */
static lua_State *limited_state(lmem *mem)
{
    *mem = (lmem){.limit = (size_t)sl_fault_value("lua.memory_mb", LUA_MEMORY_LIMIT_MB) << 20};
    return lua_newstate(limited_alloc, mem);
}

/* --- the time limit --------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void time_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    const lclock *c = *(lclock **)lua_getextraspace(L);
    if (c->deadline_ns == 0 || now_ns() <= c->deadline_ns)
        return;
    /* From now on at every instruction: a script's pcall() cannot catch it
     * and go on (its next instruction outside raises it again). */
    lua_sethook(L, time_hook, LUA_MASKCOUNT, 1);
    luaL_where(L, 0);
    lua_pushfstring(L, "still running after %f s, the stage's time_limit",
                    (LUAI_UACNUMBER)c->limit_s);
    lua_concat(L, 2);
    lua_error(L);
}

/* A new state's calls timed by c (its coroutines' too); limit_s below 0:
 * not timed (no hook). */
static void clock_start(lua_State *L, lclock *c, double limit_s)
{
    *c = (lclock){.limit_s = limit_s};
    *(lclock **)lua_getextraspace(L) = c;
    if (limit_s > 0)
        lua_sethook(L, time_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* lua_pcall (SLOT_MSGH handling errors) under the state's time limit. */
static int timed_pcall(lua_State *L, int nargs, int nresults)
{
    lclock *c = *(lclock **)lua_getextraspace(L);
    if (c->limit_s <= 0)
        return lua_pcall(L, nargs, nresults, SLOT_MSGH);
    c->deadline_ns = now_ns() + (int64_t)(c->limit_s * 1e9);
    int rc = lua_pcall(L, nargs, nresults, SLOT_MSGH);
    c->deadline_ns = 0;
    lua_sethook(L, time_hook, LUA_MASKCOUNT, HOOK_EVERY); /* back from every instruction */
    return rc;
}

/* --- what a script may not do ------------------------------------------------------ */

/* os.exit() would end the process mid-run: no rows written, no message,
 * and exit status 0 for os.exit(). */
static int l_no_exit(lua_State *L)
{
    return luaL_error(L, "os.exit() would end the whole run, not this row: error() fails the "
                         "row, return nil drops it");
}

/* debug.sethook() would take the time limit's hook away. */
static int l_no_sethook(lua_State *L)
{
    return luaL_error(L, "debug.sethook() would take away the hook that keeps the stage's "
                         "time_limit: set time_limit: 0 (none) for a stage that sets hooks");
}

/* Lua runs finalizers with hooks off, so a __gc that loops could not be
 * stopped: a metatable with one is refused while calls are timed. */
static void refuse_gc(lua_State *L, int mt)
{
    const lclock *c = *(lclock **)lua_getextraspace(L);
    if (c->limit_s <= 0 || lua_type(L, mt) != LUA_TTABLE)
        return;
    if (lua_getfield(L, mt, "__gc") != LUA_TNIL) /* a placeholder marks it too */
        luaL_error(L, "a __gc metamethod runs where the stage's time_limit cannot stop it: "
                      "release what a worker holds in close(), or set time_limit: 0 (none)");
    lua_pop(L, 1);
}

/* The base library's setmetatable() with refuse_gc(). */
static int l_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    refuse_gc(L, 2);
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* debug.setmetatable() with refuse_gc(). */
static int l_debug_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    refuse_gc(L, 2);
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* debug.getregistry() reached the metatables whose __gc is C (a file's,
 * sluice's boxes of JSON): one set to a Lua loop ran with hooks off. */
static int l_no_getregistry(lua_State *L)
{
    return luaL_error(L, "debug.getregistry() would reach metatables whose __gc the stage's "
                         "time_limit cannot stop: set time_limit: 0 (none) for a stage that "
                         "needs the registry");
}

static int l_file_mt_newindex(lua_State *L)
{
    return luaL_error(L, "a file's metatable cannot change while calls are timed (its __gc "
                         "runs where the stage's time_limit cannot stop it): set time_limit: 0 "
                         "(none) for a stage that changes it");
}

/* Files have a __gc, so they are finalized: the metatable's __gc set to a
 * Lua function (getmetatable(io.stdout).__gc = ...) ran with hooks off, and
 * a loop there hung the run past its time_limit, Ctrl-C too. getmetatable()
 * of a file gives a read-only view of it instead (__metatable). */
static void guard_file_metatable(lua_State *L)
{
    luaL_getmetatable(L, LUA_FILEHANDLE);
    lua_newtable(L); /* the view */
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_file_mt_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* xpcall()'s handler runs where the error is raised: for the time limit's
 * error, inside the count hook, where Lua runs no hooks, so a handler that
 * loops could never be stopped. The script's handler (upvalue 1) is called
 * only while the call has time; after, the error goes up as it is. */
static int guarded_msgh(lua_State *L)
{
    const lclock *c = *(lclock **)lua_getextraspace(L);
    if (c->deadline_ns != 0 && now_ns() > c->deadline_ns)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* The base library's xpcall() (its finishpcall), with guarded_msgh in
 * place of the handler; yields across it as the library's does. */
static int xpcall_done(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int l_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, guarded_msgh, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* true and f below f's arguments */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xpcall_done);
    return xpcall_done(L, status, 2);
}

/* Lua does not check bytecode: a wrong binary chunk (a damaged .luac, a
 * string.dump() changed) crashed the process (SIGSEGV). So chunks load as
 * text only: load() and loadfile() with their mode forced to "t" (upvalue
 * 1: the library's function; arg: the mode's place), dofile() and
 * require()'s Lua searcher through luaL_loadfilex(..., "t"). */
static int text_only(lua_State *L)
{
    int mode_arg = (int)lua_tointeger(L, lua_upvalueindex(2));
    if (lua_gettop(L) < mode_arg)
        lua_settop(L, mode_arg);
    lua_pushliteral(L, "t");
    lua_replace(L, mode_arg);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int l_dofile(lua_State *L)
{
    const char *name = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, name, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* package.searchers[2] as Lua's (searcher_Lua), text only. */
static int l_search_lua(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, 1);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2))
        return 1; /* searchpath's message: where it looked */
    lua_pop(L, 1);
    const char *file = lua_tostring(L, -1);
    if (luaL_loadfilex(L, file, "t") != LUA_OK)
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                          lua_tostring(L, -1));
    lua_pushstring(L, file);
    return 2;
}

static void text_chunks_only(lua_State *L)
{
    static const struct {
        const char *name;
        int mode_arg;
    } fns[] = {{"load", 3}, {"loadfile", 2}};
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
        lua_getglobal(L, fns[i].name);
        lua_pushinteger(L, fns[i].mode_arg);
        lua_pushcclosure(L, text_only, 2);
        lua_setglobal(L, fns[i].name);
    }
    lua_pushcfunction(L, l_dofile);
    lua_setglobal(L, "dofile");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_pushcfunction(L, l_search_lua);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
}

/* In place of the standard functions that could end the run or get past
 * the time limit (docs/stages.md, "Limits and cost"). */
static void guard_libs(lua_State *L)
{
    text_chunks_only(L);
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_no_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_setmetatable);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, l_xpcall);
    lua_setglobal(L, "xpcall");
    lua_getglobal(L, "debug");
    lua_pushcfunction(L, l_debug_setmetatable);
    lua_setfield(L, -2, "setmetatable");
    const lclock *c = *(lclock **)lua_getextraspace(L);
    if (c->limit_s > 0) {
        lua_pushcfunction(L, l_no_sethook);
        lua_setfield(L, -2, "sethook");
        /* The registry and a metatable behind __metatable hold the __gc
         * metamethods a script could change (guard_file_metatable()). */
        lua_pushcfunction(L, l_no_getregistry);
        lua_setfield(L, -2, "getregistry");
        lua_getglobal(L, "getmetatable");
        lua_setfield(L, -2, "getmetatable");
        guard_file_metatable(L);
    }
    lua_pop(L, 1);
}

/* A Lua string may hold NUL bytes, and from here on the message is a C
 * string: each NUL of the string on top becomes "\x00" (as the printer
 * writes a control byte), so the row's error keeps the text after it.
 * Returns the string on top, replaced when it held any. */
static const char *nul_escaped(lua_State *L)
{
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (!memchr(msg, '\0', len))
        return msg;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        if (msg[i])
            luaL_addchar(&b, msg[i]);
        else
            luaL_addstring(&b, "\\x00");
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* The message handler of every call: the error with a traceback. */
static int traceback(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        lua_pushvalue(L, 1);
    else if (!luaL_callmeta(L, 1, "__tostring") || lua_type(L, -1) != LUA_TSTRING)
        lua_pushfstring(L, "(an error object of type %s)", luaL_typename(L, 1));
    luaL_traceback(L, L, nul_escaped(L), 1);
    return 1;
}

/* The error on top of the stack as text (our handler made it a string;
 * memory errors skip the handler). */
static const char *error_text(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    return msg ? msg : "(an error that is not a string)";
}

/* msg with the script's name as Lua shortens a long path ("...tail", at
 * most LUA_IDSIZE bytes) put back whole: a message names the file as the
 * job gave it. A new string (sl_free) or NULL when out of memory. */
static char *expand_path(const lua_stage *ls, const char *msg)
{
    if (!ls->short_path)
        return sl_strdup(msg);
    size_t n_short = strlen(ls->short_path), n_path = strlen(ls->path), n = 0;
    for (const char *p = msg; (p = strstr(p, ls->short_path)); p += n_short)
        n++;
    char *out = sl_malloc(strlen(msg) + n * n_path + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = msg, *hit;; p = hit + n_short) {
        if (!(hit = strstr(p, ls->short_path))) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, ls->path, n_path);
        o += n_path;
    }
    return out;
}

/* Where our handler's traceback begins in text (after whatever the
 * message itself held), or NULL when it has none. */
static const char *traceback_start(const char *text)
{
    const char *trace = NULL;
    for (const char *t = text; (t = strstr(t, "\nstack traceback:")); t++)
        trace = t;
    return trace;
}

/* An error with its traceback, on one log line (a log line is one line):
 * its line breaks as " | ", tabs dropped; naming the row that failed, or
 * (row NULL) `what` failed. */
static void log_traceback(const lua_stage *ls, const sl_row *row, const char *what,
                          const char *text)
{
    if (sl_log_get_level() > SL_LOG_DEBUG)
        return;
    char line[1536];
    size_t n = 0;
    for (const char *s = text; *s && n + 4 < sizeof line; s++) {
        if (*s == '\n') {
            memcpy(line + n, " | ", 3);
            n += 3;
        } else if (*s != '\t') {
            line[n++] = *s;
        }
    }
    line[n] = '\0';
    if (row)
        sl_log(SL_LOG_DEBUG, "stage '%s': row %s: %s", ls->name, sl_pipeline_row_id(row), line);
    else
        sl_log(SL_LOG_DEBUG, "stage '%s': %s%s", ls->name, what, line);
}

/* sl_fail(status, "stage 'NAME': <what>: <Lua's message>"), the path whole:
 * the message a user reads where the command stops (exit 2), so its
 * traceback goes to the log (-v), as a failed row's does. */
static sl_status fail_lua(sl_status status, const lua_stage *ls, const char *what,
                          const char *msg)
{
    char *full = expand_path(ls, msg);
    const char *text = full ? full : msg, *trace = traceback_start(text);
    if (trace)
        log_traceback(ls, NULL, what, text);
    sl_status st = sl_fail(status, "stage '%s': %s%.*s", ls->name, what,
                           (int)(trace ? (size_t)(trace - text) : strlen(text)), text);
    sl_free(full);
    return st;
}

/* --- JSON <-> Lua ----------------------------------------------------------------- */

/* Pushes v as a Lua value: objects and arrays as tables, null as sluice.null.
 * `what` (NULL: none) names the value in the error past JSON_DEPTH. */
static void push_json_named(lua_State *L, const json_t *v, int depth, const char *what)
{
    if (depth > JSON_DEPTH)
        luaL_error(L, "%s%sJSON nested deeper than %d", what ? what : "", what ? " holds " : "",
                   JSON_DEPTH);
    luaL_checkstack(L, 4, "JSON value");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            push_json_named(L, e, depth + 1, what);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_json_named(L, json_array_get(v, i), depth + 1, what);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    default: lua_pushlightuserdata(L, NULL); break; /* sluice.null */
    }
}

static void push_json(lua_State *L, const json_t *v, int depth)
{
    push_json_named(L, v, depth, NULL);
}

static json_t *to_json(lua_State *L, int idx, int depth);

/* json_t owned by the Lua stack: freed by the GC if an error unwinds. */
typedef struct jbox {
    json_t *v;
} jbox;

static int jbox_gc(lua_State *L)
{
    jbox *b = lua_touserdata(L, 1);
    json_decref(b->v);
    b->v = NULL;
    return 0;
}

/* v (NULL too) held by a userdata pushed on the stack, which frees it when
 * collected: a value that must not leak if a Lua error unwinds. */
static jbox *push_box(lua_State *L, json_t *v)
{
    jbox *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->v = v;
    luaL_setmetatable(L, "sluice.jbox");
    return b;
}

/* A table as a JSON array (keys exactly 1..n) or object (string keys);
 * an empty one is an array unless made with sluice.object(). What is built
 * so far is held by a box on the stack: an error (a value without JSON deep
 * inside) frees it. */
static json_t *table_to_json(lua_State *L, int idx, int depth)
{
    if (depth > JSON_DEPTH)
        luaL_error(L, "a table nested deeper than %d (or one that contains itself) has no JSON",
                   JSON_DEPTH);
    luaL_checkstack(L, 6, "table to JSON");
    idx = lua_absindex(L, idx);
    bool is_object = false;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, OBJECT_MT);
        is_object = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    size_t count = 0;
    bool all_index = true;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            if (lua_tointeger(L, -1) > max)
                max = lua_tointeger(L, -1);
        } else {
            all_index = false;
        }
    }
    bool array = !is_object && all_index && (lua_Integer)count == max;
    jbox *box = push_box(L, NULL);
    if (!(box->v = array ? json_array() : json_object()))
        luaL_error(L, "not enough memory");
    if (array) {
        for (lua_Integer i = 1; i <= max; i++) {
            lua_rawgeti(L, idx, i);
            json_t *e = to_json(L, -1, depth + 1);
            lua_pop(L, 1);
            if (json_array_append_new(box->v, e) != 0)
                luaL_error(L, "not enough memory");
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "a table with a %s key has no JSON: use either the keys 1..n (an "
                              "array) or string keys (an object)", luaL_typename(L, -2));
            json_t *e = to_json(L, -1, depth + 1);
            lua_pop(L, 1);
            size_t klen;
            const char *k = lua_tolstring(L, -1, &klen);
            if (strlen(k) != klen || json_object_set_new(box->v, k, e) != 0)
                luaL_error(L, "the key '%s' has no JSON (a NUL byte or invalid UTF-8)", k);
        }
    }
    json_t *out = box->v;
    box->v = NULL;
    lua_pop(L, 1);
    return out;
}

/* Lua strings may hold NUL bytes; sluice's texts (answers, prompts, the
 * columns it writes) are C strings, and a manifest's "\u0000" is refused
 * for that: a string with a NUL was written cut short at it (a column, the
 * answer) or failed in jansson's words (a table's). Raises an error naming
 * `what` and where the NUL is. */
static void refuse_nul(lua_State *L, const char *s, size_t n, const char *what)
{
    const char *nul = memchr(s, '\0', n);
    if (nul)
        luaL_error(L, "%s holds a NUL byte (byte %I of %I), which sluice does not take in a text: "
                      "remove it, or write binary data as hex or base64",
                   what, (lua_Integer)(nul - s) + 1, (lua_Integer)n);
}

/* luaL_checklstring() of a text refuse_nul() lets through. */
static const char *check_text(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    refuse_nul(L, s, n, what);
    return s;
}

/* The Lua value at idx as JSON (a new reference; raises a Lua error for a
 * value JSON has no form for, having freed what it built). */
static json_t *to_json(lua_State *L, int idx, int depth)
{
    json_t *v = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: v = json_null(); break;
    case LUA_TBOOLEAN: v = json_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v = json_integer((json_int_t)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d)) /* ("%f" said -nan for 0/0) */
                luaL_error(L, "%s has no JSON (nil is no value)",
                           isnan(d) ? "NaN" : d > 0 ? "infinity" : "-infinity");
            v = json_real(d);
        }
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        refuse_nul(L, s, n, "a string");
        v = sl_json_text(s, n);
        break;
    }
    case LUA_TTABLE: return table_to_json(L, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (!lua_touserdata(L, idx)) {
            v = json_null();
            break;
        }
        /* fall through */
    default: luaL_error(L, "a %s has no JSON", luaL_typename(L, idx));
    }
    if (!v)
        luaL_error(L, "not enough memory");
    return v;
}

/* to_json() whose result is held by a box pushed on the stack. */
static json_t *to_json_boxed(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    jbox *b = push_box(L, NULL);
    b->v = to_json(L, idx, 0);
    return b->v;
}

/* --- a row ------------------------------------------------------------------------ */

static lrow *check_row(lua_State *L, int idx)
{
    lrow *h = luaL_checkudata(L, idx, ROW_MT);
    if (!h->row)
        luaL_error(L, "a row used after its process() call returned: keep the values you need "
                      "(row.id, a column), not the row");
    return h;
}

/* The row behind a columns or image proxy (its user value). */
static sl_row *proxied_row(lua_State *L, int idx, const char *mt)
{
    luaL_checkudata(L, idx, mt);
    lua_getiuservalue(L, idx, 1);
    lrow *h = check_row(L, -1);
    lua_pop(L, 1);
    return h->row;
}

static void push_proxy(lua_State *L, int row_idx, const char *mt)
{
    row_idx = lua_absindex(L, row_idx);
    lua_newuserdatauv(L, 1, 1);
    lua_pushvalue(L, row_idx);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, mt);
}

static void push_text(lua_State *L, const char *s)
{
    if (s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
}

/* row:task_answer(name): with tasks, that task's answer (nil before the
 * engine or for another name); row:set_task_answer(name, text). */
static int row_task_answer(lua_State *L)
{
    lrow *h = check_row(L, 1);
    push_text(L, sl_pipeline_row_task_answer(h->row, luaL_checkstring(L, 2)));
    return 1;
}

static int row_set_task_answer(lua_State *L)
{
    lrow *h = check_row(L, 1);
    if (sl_pipeline_row_set_task_answer(h->row, check_text(L, 2, "a task's name"),
                                        check_text(L, 3, "a task's answer")) != SL_OK)
        return luaL_error(L, "%s", sl_last_error());
    return 0;
}

/* JSON text as a Lua value (nil for NULL). The parsed value is held by a
 * box while it is pushed: push_json may raise (the state's memory limit,
 * nesting past JSON_DEPTH), and a bare json_t would be lost. */
static void push_json_text(lua_State *L, const char *text)
{
    jbox *b = text ? push_box(L, NULL) : NULL; /* (may raise: nothing held yet) */
    if (b)
        b->v = json_loads(text, 0, NULL);
    if (!b || !b->v) {
        if (b)
            lua_pop(L, 1);
        lua_pushnil(L);
        return;
    }
    push_json(L, b->v, 0);
    json_decref(b->v);
    b->v = NULL;
    lua_remove(L, -2);
}

/* row:task_logprobs(name): that task's log-probabilities (nil when not
 * asked for, before the engine, or for another name). */
static int row_task_logprobs(lua_State *L)
{
    lrow *h = check_row(L, 1);
    push_json_text(L, sl_pipeline_row_logprobs(h->row, luaL_checkstring(L, 2)));
    return 1;
}

/* row:task_scores(name): that task's choice scores (nil without choices,
 * before the engine, or for another name). */
static int row_task_scores(lua_State *L)
{
    lrow *h = check_row(L, 1);
    push_json_text(L, sl_pipeline_row_scores(h->row, luaL_checkstring(L, 2)));
    return 1;
}

/* row:answers(): every answer of the row in order (its tasks' or its
 * samples', else the one), a list of strings; {} before the engine. */
static int row_answers(lua_State *L)
{
    lrow *h = check_row(L, 1);
    int n = sl_pipeline_row_answer_count(h->row);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        push_text(L, sl_pipeline_row_answer_at(h->row, k));
        lua_rawseti(L, -2, (lua_Integer)k + 1);
    }
    return 1;
}

/* row:gray(w, h): the decoded image as w*h grey bytes, a string. */
static int row_gray(lua_State *L)
{
    lrow *h = check_row(L, 1);
    lua_Integer w = luaL_checkinteger(L, 2), hh = luaL_checkinteger(L, 3);
    if (w < 1 || hh < 1 || w > 256 || hh > 256)
        return luaL_error(L, "row:gray(w, h) takes 1..256 pixels a side, not %dx%d", (int)w,
                          (int)hh);
    uint8_t px[256 * 256];
    if (sl_pipeline_row_gray(h->row, (int)w, (int)hh, px) != SL_OK)
        return luaL_error(L, "%s", sl_last_error());
    lua_pushlstring(L, (const char *)px, (size_t)(w * hh));
    return 1;
}

static int row_index(lua_State *L)
{
    lrow *h = check_row(L, 1);
    const char *k = luaL_checkstring(L, 2);
    switch (k[0]) {
    case 'a':
        if (strcmp(k, "answer") == 0) {
            push_text(L, sl_pipeline_row_answer(h->row));
            return 1;
        }
        if (strcmp(k, "answers") == 0) {
            lua_pushcfunction(L, row_answers);
            return 1;
        }
        break;
    case 'c':
        if (strcmp(k, "columns") == 0) {
            push_proxy(L, 1, COLUMNS_MT);
            return 1;
        }
        break;
    case 'g':
        if (strcmp(k, "gray") == 0) {
            lua_pushcfunction(L, row_gray);
            return 1;
        }
        break;
    case 'l':
        if (strcmp(k, "logprobs") == 0) {
            push_json_text(L, sl_pipeline_row_logprobs(h->row, NULL));
            return 1;
        }
        break;
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushstring(L, sl_pipeline_row_id(h->row));
            return 1;
        }
        if (strcmp(k, "image") == 0) {
            push_proxy(L, 1, IMAGE_MT);
            return 1;
        }
        break;
    case 's':
        if (strcmp(k, "set_task_answer") == 0) {
            lua_pushcfunction(L, row_set_task_answer);
            return 1;
        }
        if (strcmp(k, "scores") == 0) {
            push_json_text(L, sl_pipeline_row_scores(h->row, NULL));
            return 1;
        }
        break;
    case 't':
        if (strcmp(k, "task_answer") == 0) {
            lua_pushcfunction(L, row_task_answer);
            return 1;
        }
        if (strcmp(k, "task_logprobs") == 0) {
            lua_pushcfunction(L, row_task_logprobs);
            return 1;
        }
        if (strcmp(k, "task_scores") == 0) {
            lua_pushcfunction(L, row_task_scores);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "path") == 0) {
            push_text(L, sl_pipeline_row_path(h->row));
            return 1;
        }
        if (strcmp(k, "prompt") == 0) {
            push_text(L, sl_pipeline_row_prompt(h->row));
            return 1;
        }
        break;
    default: break;
    }
    return luaL_error(L, "a row has no field '%s' (id, path, prompt, answer, answers, logprobs, "
                         "scores, columns, image, gray, task_answer, set_task_answer, "
                         "task_logprobs, task_scores)", k);
}

static int row_newindex(lua_State *L)
{
    lrow *h = check_row(L, 1);
    const char *k = luaL_checkstring(L, 2);
    sl_status st;
    bool prompt = strcmp(k, "prompt") == 0;
    /* Said in the script's terms: Lua's own "bad argument #3 to 'newindex'
     * (string expected, got table)" named neither the field nor the row. */
    if ((prompt || strcmp(k, "answer") == 0) && !lua_isstring(L, 3) &&
        !(prompt && lua_isnil(L, 3)))
        return luaL_error(L, "row.%s takes a string%s, got %s", k,
                          prompt ? " (nil: the job's prompt)" : "", luaL_typename(L, 3));
    if (prompt) {
        st = sl_pipeline_row_set_prompt(h->row,
                                        lua_isnil(L, 3) ? NULL : check_text(L, 3, "row.prompt"));
    } else if (strcmp(k, "answer") == 0) {
        st = sl_pipeline_row_set_answer(h->row, check_text(L, 3, "row.answer"));
    } else {
        return luaL_error(L, "row.%s cannot be set: a script sets row.prompt (before the engine), "
                             "row.answer (after it) and row.columns.NAME", k);
    }
    if (st != SL_OK)
        return luaL_error(L, "%s", sl_last_error());
    return 0;
}

static int row_tostring(lua_State *L)
{
    lrow *h = luaL_checkudata(L, 1, ROW_MT);
    if (h->row)
        lua_pushfstring(L, "row %s", sl_pipeline_row_id(h->row));
    else
        lua_pushstring(L, "row (gone: its process() call returned)");
    return 1;
}

/* Pushes the value of JSON text (sl_pipeline_text_free()d here; nil for
 * NULL) held by b, a box the caller pushed before it had the text: nothing
 * that may raise comes between the text's making and its freeing. */
static void push_parsed(lua_State *L, jbox *b, char *text, const char *what)
{
    json_error_t err;
    bool had = text != NULL;
    b->v = had ? json_loads(text, JSON_DECODE_ANY, &err) : NULL;
    sl_pipeline_text_free(text);
    if (!had) {
        lua_pushnil(L);
        return;
    }
    if (!b->v)
        luaL_error(L, "not enough memory");
    push_json_named(L, b->v, 0, what);
}

static int columns_index(lua_State *L)
{
    sl_row *row = proxied_row(L, 1, COLUMNS_MT);
    const char *k = luaL_checkstring(L, 2);
    const char *s = sl_pipeline_row_column_string(row, k);
    if (s) {
        lua_pushstring(L, s);
    } else {
        char what[96];
        snprintf(what, sizeof what, "row.columns.%.64s", k);
        jbox *b = push_box(L, NULL);
        push_parsed(L, b, sl_pipeline_row_column_json(row, k), what);
    }
    return 1;
}

static int columns_newindex(lua_State *L)
{
    sl_row *row = proxied_row(L, 1, COLUMNS_MT);
    const char *k = check_text(L, 2, "a column's name");
    sl_status st;
    if (lua_isnil(L, 3)) {
        st = sl_pipeline_row_set_column_json(row, k, NULL);
    } else if (lua_type(L, 3) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, 3, &n);
        if (memchr(s, '\0', n))
            refuse_nul(L, s, n, lua_pushfstring(L, "row.columns.%s", k));
        st = sl_pipeline_row_set_column_string(row, k, s);
    } else {
        json_t *v = to_json_boxed(L, 3);
        char *text = sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY, NULL);
        if (!text)
            return luaL_error(L, "not enough memory");
        st = sl_pipeline_row_set_column_json(row, k, text);
        sl_free(text);
    }
    if (st != SL_OK)
        return luaL_error(L, "%s", sl_last_error());
    return 0;
}

/* pairs(row.columns): over a table made of the columns now. */
static int columns_pairs(lua_State *L)
{
    sl_row *row = proxied_row(L, 1, COLUMNS_MT);
    lua_getglobal(L, "next");
    jbox *b = push_box(L, NULL);
    push_parsed(L, b, sl_pipeline_row_columns_json(row), "row.columns");
    if (lua_isnil(L, -1))
        return luaL_error(L, "not enough memory");
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

static int image_index(lua_State *L)
{
    sl_row *row = proxied_row(L, 1, IMAGE_MT);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "width") == 0 || strcmp(k, "height") == 0) {
        int v = k[0] == 'w' ? sl_pipeline_row_width(row) : sl_pipeline_row_height(row);
        if (v > 0)
            lua_pushinteger(L, v);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "format") == 0) {
        push_text(L, sl_pipeline_row_image_format(row));
    } else if (strcmp(k, "bytes") == 0) {
        const uint8_t *b;
        size_t len;
        if (sl_pipeline_row_image_bytes(row, &b, &len) != SL_OK)
            return luaL_error(L, "%s", sl_last_error());
        if (b)
            lua_pushlstring(L, (const char *)b, len);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "frames") == 0 || strcmp(k, "seconds") == 0) {
        int frames;
        double seconds;
        if (!sl_pipeline_row_video(row, &frames, &seconds))
            lua_pushnil(L); /* an image, or not decoded yet */
        else if (k[0] == 'f')
            lua_pushinteger(L, frames);
        else
            lua_pushnumber(L, seconds);
    } else if (strcmp(k, "count") == 0) {
        int count = sl_pipeline_row_image_count(row);
        lua_pushinteger(L, count > 0 ? count : 1);
    } else {
        return luaL_error(L, "row.image has no field '%s' (width, height, format, bytes, "
                             "frames, seconds, count)", k);
    }
    return 1;
}

static int image_newindex(lua_State *L)
{
    return luaL_error(L, "row.image is read-only");
}

/* --- the sluice table ---------------------------------------------------------------- */

/* sluice.copy(row): a new row after row (fan-out), to return with it. */
static int l_copy(lua_State *L)
{
    lworker *w = lua_touserdata(L, lua_upvalueindex(1));
    lrow *h = check_row(L, 1);
    if (!w || h->row != w->parent)
        return luaL_error(L, "sluice.copy(row) copies the row of this process() call");
    if (w->n_kids == w->cap_kids) {
        size_t cap = w->cap_kids ? 2 * w->cap_kids : 4;
        lrow **grown = sl_realloc(w->kids, cap * sizeof *grown);
        if (!grown)
            return luaL_error(L, "not enough memory");
        w->kids = grown;
        w->cap_kids = cap;
    }
    /* The handle and its anchor before the row: nothing can fail after
     * the executor made it. */
    lrow *k = lua_newuserdatauv(L, sizeof *k, 0);
    *k = (lrow){NULL, false};
    luaL_setmetatable(L, ROW_MT);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->kids_ref);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (lua_Integer)w->n_kids + 1);
    lua_pop(L, 1);
    if (sl_pipeline_row_emit(h->row, &k->row) != SL_OK)
        return luaL_error(L, "%s", sl_last_error());
    w->kids[w->n_kids++] = k;
    return 1;
}

static int l_object(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_setmetatable(L, OBJECT_MT);
    return 1;
}

static int l_log(lua_State *L)
{
    const lua_stage *ls = lua_touserdata(L, lua_upvalueindex(1));
    sl_log(SL_LOG_INFO, "stage '%s': %s", ls->name, luaL_tolstring(L, 1, NULL));
    return 0;
}

static int l_to_json(lua_State *L)
{
    luaL_checkany(L, 1);
    json_t *v = to_json_boxed(L, 1);
    /* sl_json_dump: a real as its shortest text (19.99, where json_dumps
     * writes 19.989999999999998), as every JSON sluice writes */
    char *text = sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY, NULL);
    if (!text)
        return luaL_error(L, "not enough memory");
    lua_pushstring(L, text);
    sl_free(text);
    return 1;
}

static int l_from_json(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    json_error_t err;
    jbox *b = push_box(L, NULL);
    if (!(b->v = json_loadb(s, n, JSON_DECODE_ANY, &err))) {
        sl_json_explain(&err); /* its "\u0000 ... without JSON_ALLOW_NUL" named jansson's flag */
        return luaL_error(L, "not JSON: %s (line %d, column %d)", err.text, err.line, err.column);
    }
    push_json(L, b->v, 0);
    return 1;
}

/* Protected (it allocates): the standard libraries, our metatables, the
 * sluice table; arguments: the stage, the worker (NULL at the open-time
 * check: sluice.copy then refuses). */
static int open_sluice(lua_State *L)
{
    const lua_stage *ls = lua_touserdata(L, 1);
    lworker *w = lua_touserdata(L, 2);
    luaL_openlibs(L);
    guard_libs(L);
    luaL_newmetatable(L, "sluice.jbox");
    lua_pushcfunction(L, jbox_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, OBJECT_MT);
    lua_pop(L, 1);
    static const luaL_Reg row_fns[] = {{"__index", row_index}, {"__newindex", row_newindex},
                                       {"__tostring", row_tostring}, {NULL, NULL}};
    static const luaL_Reg col_fns[] = {{"__index", columns_index},
                                       {"__newindex", columns_newindex},
                                       {"__pairs", columns_pairs}, {NULL, NULL}};
    static const luaL_Reg img_fns[] = {{"__index", image_index},
                                       {"__newindex", image_newindex}, {NULL, NULL}};
    const struct {
        const char *name;
        const luaL_Reg *fns;
    } mts[] = {{ROW_MT, row_fns}, {COLUMNS_MT, col_fns}, {IMAGE_MT, img_fns}};
    for (size_t i = 0; i < sizeof mts / sizeof *mts; i++) {
        luaL_newmetatable(L, mts[i].name);
        luaL_setfuncs(L, mts[i].fns, 0);
        lua_pushliteral(L, "sluice");
        lua_setfield(L, -2, "__metatable"); /* getmetatable() cannot reach ours */
        lua_pop(L, 1);
    }
    lua_newtable(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, ls->name);
    lua_setfield(L, -2, "stage");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, l_copy, 1);
    lua_setfield(L, -2, "copy");
    lua_pushcfunction(L, l_object);
    lua_setfield(L, -2, "object");
    lua_pushlightuserdata(L, (void *)ls);
    lua_pushcclosure(L, l_log, 1);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, l_to_json);
    lua_setfield(L, -2, "to_json");
    lua_pushcfunction(L, l_from_json);
    lua_setfield(L, -2, "from_json");
    lua_setglobal(L, "sluice");

    /* require() finds modules next to the script. */
    const char *slash = strrchr(ls->path, '/');
    lua_getglobal(L, "package");
    if (slash)
        lua_pushlstring(L, ls->path, (size_t)(slash - ls->path));
    else
        lua_pushliteral(L, ".");
    lua_pushliteral(L, "/?.lua;");
    lua_getfield(L, -3, "path");
    lua_concat(L, 3);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    if (w) {
        lua_newtable(L);
        w->kids_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

/* A new state with sluice opened and the script run: the message handler
 * at SLOT_MSGH and process() at SLOT_PROCESS. On failure, NULL and the
 * message (file:line: cause) through sl_fail. */
static lua_State *load_script(const lua_stage *ls, lworker *w, lmem *mem, lclock *clock,
                              sl_status *st)
{
    lua_State *L = limited_state(mem);
    *st = SL_ERR_NOMEM;
    if (!L) {
        sl_fail(SL_ERR_NOMEM, "out of memory starting stage '%s'", ls->name);
        return NULL;
    }
    clock_start(L, clock, ls->time_limit_s);
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, open_sluice);
    lua_pushlightuserdata(L, (void *)ls);
    lua_pushlightuserdata(L, w);
    if (timed_pcall(L, 2, 0) != LUA_OK) {
        *st = fail_lua(SL_ERR_NOMEM, ls, "", error_text(L));
    } else if (luaL_loadfilex(L, ls->path, "t") != LUA_OK) { /* text_chunks_only() */
        *st = fail_lua(SL_ERR_INVALID_ARG, ls, "", error_text(L));
    } else if (timed_pcall(L, 0, 0) != LUA_OK) {
        *st = fail_lua(SL_ERR_INVALID_ARG, ls, "the script failed as it loaded: ",
                       error_text(L));
    } else if (lua_getglobal(L, "process") != LUA_TFUNCTION) {
        *st = sl_fail(SL_ERR_INVALID_ARG, "stage '%s': %s defines no function process(row)",
                      ls->name, ls->path);
    } else {
        *st = SL_OK;
        return L;
    }
    lua_close(L);
    return NULL;
}

/* --- the stage's functions ------------------------------------------------------------ */

/* Stack slots of a worker's state between calls. */
enum { SLOT_CALL = SLOT_PROCESS + 1 };

/* Protected: process(row) on the row (a light userdata), through a handle
 * made here and known to the worker before the script sees it (so it is
 * cleared however the call ends). Upvalues: process, the row metatable,
 * the worker. */
static int call_process(lua_State *L)
{
    lworker *w = lua_touserdata(L, lua_upvalueindex(3));
    sl_row *row = lua_touserdata(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lrow *h = lua_newuserdatauv(L, sizeof *h, 0);
    *h = (lrow){row, false};
    w->cur = h;
    w->parent = row;
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    lua_call(L, 1, 1);
    return 1;
}

/* Protected: what a worker's state holds besides the script. */
static int prepare(lua_State *L)
{
    lworker *w = lua_touserdata(L, 1);
    lua_getglobal(L, "process");
    luaL_getmetatable(L, ROW_MT);
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, call_process, 3);
    if (lua_getglobal(L, "close") == LUA_TFUNCTION)
        w->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    return 1;
}

/* Protected: init(config, worker) when the script defines it. */
static int call_init(lua_State *L)
{
    lworker *w = lua_touserdata(L, 1);
    if (lua_getglobal(L, "init") != LUA_TFUNCTION)
        return 0;
    push_json(L, w->ls->config, 0);
    lua_pushinteger(L, w->worker);
    lua_call(L, 2, 0);
    return 0;
}

/* Protected: close(how) when the script defines it. */
static int call_close(lua_State *L)
{
    lworker *w = lua_touserdata(L, 1);
    const char *how = lua_touserdata(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->close_ref);
    lua_pushstring(L, how);
    lua_call(L, 1, 0);
    return 0;
}

static void worker_free(lworker *w)
{
    if (w->L)
        lua_close(w->L);
    sl_free(w->kids);
    sl_free(w);
}

static sl_status lua_init(void *config, int worker, void **state)
{
    const lua_stage *ls = config;
    *state = NULL;
    lworker *w = sl_calloc(1, sizeof *w);
    if (!w)
        return sl_fail(SL_ERR_NOMEM, "stage '%s': out of memory starting a worker", ls->name);
    w->ls = ls;
    w->worker = worker;
    w->close_ref = LUA_NOREF;
    w->kids_ref = LUA_NOREF;
    sl_status st;
    if (!(w->L = load_script(ls, w, &w->mem, &w->clock, &st))) {
        worker_free(w);
        return st;
    }
    lua_State *L = w->L;
    lua_pushcfunction(L, prepare);
    lua_pushlightuserdata(L, w);
    if (timed_pcall(L, 1, 1) != LUA_OK) {
        st = fail_lua(SL_ERR_NOMEM, ls, "", error_text(L));
        worker_free(w);
        return st;
    }
    /* stack: handler, process, call_process (SLOT_CALL) */
    lua_pushcfunction(L, call_init);
    lua_pushlightuserdata(L, w);
    if (timed_pcall(L, 1, 0) != LUA_OK) {
        char what[64];
        snprintf(what, sizeof what, "init() failed on worker %d: ", worker);
        st = fail_lua(SL_ERR_INVALID_ARG, ls, what, error_text(L));
        worker_free(w);
        return st;
    }
    lua_settop(L, SLOT_CALL);
    *state = w;
    return SL_OK;
}

/* Marks the handle at idx kept when it is this call's row or one of its
 * copies; false when it is not. */
static bool keep(lua_State *L, lworker *w, int idx)
{
    lrow *h = luaL_testudata(L, idx, ROW_MT);
    if (!h || !h->row)
        return false;
    bool ours = h == w->cur;
    for (size_t k = 0; !ours && k < w->n_kids; k++)
        ours = w->kids[k] == h;
    if (ours)
        h->keep = true;
    return ours;
}

/* What process() returned, at the top of the stack: which of this call's
 * rows go on. NULL when that is understood, else why not (in why[]).
 * Nothing here allocates in the state: it runs unprotected. */
static const char *mark_kept(lua_State *L, lworker *w, char *why, size_t size)
{
    int t = lua_gettop(L);
    if (lua_isnil(L, t) || keep(L, w, t))
        return NULL;
    if (luaL_testudata(L, t, ROW_MT)) {
        snprintf(why, size, "process() returned a row of another call: return this call's row, "
                            "its copies (sluice.copy), or nil");
        return why;
    }
    if (lua_type(L, t) != LUA_TTABLE) {
        snprintf(why, size, "process() returned a %s: return the row, nil (to drop it) or a list "
                            "of rows", luaL_typename(L, t));
        return why;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        bool ok = keep(L, w, -1);
        if (!ok)
            snprintf(why, size, "process() returned a list with a %s at [%d]: a list holds "
                                "this call's row and its copies (sluice.copy)",
                     luaL_testudata(L, -1, ROW_MT) ? "row of another call"
                                                    : luaL_typename(L, -1), (int)i);
        lua_pop(L, 1);
        if (!ok)
            return why;
    }
    return NULL;
}

/* After a call: the handles cleared, the copies' anchors let go (setting
 * fields to nil allocates nothing). */
static void end_call(lua_State *L, lworker *w)
{
    if (w->cur)
        w->cur->row = NULL;
    for (size_t k = 0; k < w->n_kids; k++)
        w->kids[k]->row = NULL;
    if (w->n_kids) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->kids_ref);
        for (size_t k = 0; k < w->n_kids; k++) {
            lua_pushnil(L);
            lua_rawseti(L, -2, (lua_Integer)k + 1);
        }
    }
    w->n_kids = 0;
    w->cur = NULL;
    w->parent = NULL;
    lua_settop(L, SLOT_CALL);
}

static void drop_kids(lworker *w)
{
    for (size_t k = 0; k < w->n_kids; k++)
        if (w->kids[k]->row)
            sl_row_drop(w->kids[k]->row);
}

/* Lua's "not enough memory" alone (a memory error skips the message
 * handler: no script:line) said neither which limit nor what to do. */
static const char *memory_error(const lworker *w, char *why, size_t size)
{
    snprintf(why, size, "not enough memory: this worker's Lua state holds %.0f MB of its %zu MB "
                        "limit: keep less in the script's state between rows (docs/stages.md, "
                        "\"Limits and cost\")", (double)w->mem.used / (1 << 20),
             w->mem.limit >> 20);
    return why;
}

static sl_status lua_process(void *state, sl_row *const *rows, size_t n)
{
    lworker *w = state;
    lua_State *L = w->L;
    char why[256];
    for (size_t i = 0; i < n; i++) {
        sl_row *row = rows[i];
        if (sl_row_failed(row) || sl_row_dropped(row))
            continue;
        lua_pushvalue(L, SLOT_CALL);
        lua_pushlightuserdata(L, row);
        const char *err = NULL;
        int rc = timed_pcall(L, 1, 1);
        if (rc == LUA_ERRMEM)
            err = memory_error(w, why, sizeof why);
        else if (rc != LUA_OK)
            err = error_text(L);
        else if (lua_touserdata(L, -1) == w->cur && w->cur) /* the row itself: the usual */
            w->cur->keep = true;
        else
            err = mark_kept(L, w, why, sizeof why);
        if (err) {
            /* The row's error is the message and its script:line, what a
             * user greps for; the traceback, a dozen lines a row, goes to
             * the log (-v). The copies go with their parent's failure. */
            char *full = expand_path(w->ls, err);
            const char *text = full ? full : err;
            const char *trace = traceback_start(text);
            if (trace)
                log_traceback(w->ls, row, "", text);
            sl_row_fail_status(row, SL_ERR_STAGE, "%.*s",
                               (int)(trace ? (size_t)(trace - text) : strlen(text)), text);
            sl_free(full);
            drop_kids(w);
        } else {
            if (!w->cur->keep)
                sl_row_drop(row);
            for (size_t k = 0; k < w->n_kids; k++)
                if (!w->kids[k]->keep)
                    sl_row_drop(w->kids[k]->row);
        }
        end_call(L, w);
    }
    return SL_OK;
}

static const char *end_name(sl_exec_end end)
{
    switch (end) {
    case SL_END_COMPLETE: return "complete";
    case SL_END_STOPPED: return "stopped";
    case SL_END_ABORTED: return "aborted";
    case SL_END_FAILED: return "failed";
    default: return "restart";
    }
}

static void lua_close_worker(void *state, sl_exec_end end)
{
    lworker *w = state;
    if (!w)
        return;
    lua_State *L = w->L;
    if (w->close_ref != LUA_NOREF) {
        lua_settop(L, SLOT_CALL);
        lua_pushcfunction(L, call_close);
        lua_pushlightuserdata(L, w);
        lua_pushlightuserdata(L, (void *)end_name(end));
        if (timed_pcall(L, 2, 0) != LUA_OK) {
            char *full = expand_path(w->ls, error_text(L));
            sl_log(SL_LOG_WARN, "stage '%s': close() failed on worker %d: %s", w->ls->name,
                   w->worker, full ? full : error_text(L));
            sl_free(full);
        }
    }
    worker_free(w);
}

/* --- open ---------------------------------------------------------------------------- */

void lua_stage_free(void *impl)
{
    lua_stage *ls = impl;
    if (!ls)
        return;
    json_decref(ls->config);
    sl_free(ls->short_path);
    sl_free(ls->name);
    sl_free(ls->path);
    sl_free(ls);
}

sl_status lua_stage_open(const sl_stage_spec *spec, const char *name,
                         sl_pipeline_stage_params *params, void **impl)
{
    *impl = NULL;
    lua_stage *ls = sl_calloc(1, sizeof *ls);
    if (!ls || !(ls->name = sl_strdup(name)) || !(ls->path = sl_strdup(spec->lua))) {
        lua_stage_free(ls);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening stage '%s'", name);
    }
    /* Lua's own rule (luaO_chunkid): a source "@file" longer than
     * LUA_IDSIZE bytes is shown as "..." and the file's last LUA_IDSIZE - 4. */
    size_t len = strlen(ls->path);
    if (len + 1 > LUA_IDSIZE &&
        !(ls->short_path = sl_asprintf("...%s", ls->path + len - (LUA_IDSIZE - 4)))) {
        lua_stage_free(ls);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening stage '%s'", name);
    }
    if (!(spec->time_limit_s <= 86400)) { /* NaN too */
        lua_stage_free(ls);
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': time_limit is seconds, at most 86400 "
                       "(0: %g; below 0: none)", name, DEFAULT_TIME_LIMIT_S);
    }
    ls->time_limit_s = spec->time_limit_s == 0 ? DEFAULT_TIME_LIMIT_S : spec->time_limit_s;
    json_error_t err;
    const char *cfg = spec->config && *spec->config ? spec->config : "{}";
    ls->config = json_loads(cfg, 0, &err);
    if (!ls->config || !json_is_object(ls->config)) {
        sl_status st = sl_fail(SL_ERR_INVALID_ARG, "stage '%s': config must be a JSON object (a "
                                                   "map), got %s", name,
                               ls->config ? "another value" : err.text);
        lua_stage_free(ls);
        return st;
    }
    /* The check: the script loads and defines process() (in a state of its
     * own: the top level runs again in each worker). */
    lmem mem;
    lclock clock;
    sl_status st;
    lua_State *L = load_script(ls, NULL, &mem, &clock, &st);
    if (L)
        lua_close(L);
    if (st != SL_OK) {
        lua_stage_free(ls);
        return st;
    }
    params->config = ls;
    params->init = lua_init;
    params->process = lua_process;
    params->close = lua_close_worker;
    *impl = ls;
    return SL_OK;
}

/* --- the conversion alone, for the fuzz target ----------------------------------------- */

static int roundtrip(lua_State *L)
{
    const char *json = lua_touserdata(L, 1);
    size_t len = (size_t)lua_tointeger(L, 2);
    char **out = lua_touserdata(L, 3);
    json_error_t err;
    jbox *in = push_box(L, NULL);
    if (!(in->v = json_loadb(json, len, JSON_DECODE_ANY, &err)))
        return 0;
    push_json(L, in->v, 0);
    json_t *back = to_json_boxed(L, -1);
    if (!(*out = sl_json_dump(back, JSON_COMPACT | JSON_ENCODE_ANY, NULL)))
        return luaL_error(L, "not enough memory");
    return 0;
}

sl_status lua_stage_json_roundtrip(const char *json, size_t len, char **out)
{
    *out = NULL;
    lmem mem;
    lua_State *L = limited_state(&mem);
    if (!L)
        return sl_fail(SL_ERR_NOMEM, "out of memory making a Lua state");
    luaL_requiref(L, "_G", luaopen_base, 0); /* luaL_setmetatable needs nothing more */
    luaL_newmetatable(L, "sluice.jbox");
    lua_pushcfunction(L, jbox_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newmetatable(L, OBJECT_MT);
    lua_settop(L, 0);
    lua_pushcfunction(L, roundtrip);
    lua_pushlightuserdata(L, (void *)json);
    lua_pushinteger(L, (lua_Integer)len);
    char *dumped = NULL;
    lua_pushlightuserdata(L, &dumped);
    sl_status st = SL_OK;
    if (lua_pcall(L, 3, 0, 0) != LUA_OK)
        st = sl_fail(strstr(error_text(L), "not enough memory") ? SL_ERR_NOMEM : SL_ERR_INVALID_ARG,
                     "%s", error_text(L));
    lua_close(L);
    if (st == SL_OK)
        *out = dumped;
    else
        sl_free(dumped);
    return st;
}
