/* The Lua sandbox: allow-listed library, counting allocator, CPU deadline, read-only proxies.
 * See lua_sandbox.h for the contract. Every lua_CFunction here may longjmp (STYLE 18); the
 * exported functions not marked LJMP in the header catch everything. */
#include "lua_sandbox.h"

#include "lua_pattern.h"
#include "util.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MG_SB_DEFAULT_MEM (32 << 20)
#define MG_SB_DEFAULT_STRING (256 << 10)
#define MG_SB_DEFAULT_INTERVAL 1000
/* An allocation at least this large is where O(n) work happens (a long string, a table resize):
 * it is a good moment to look at the clock, whatever the instruction count says. */
#define MG_SB_BIG_ALLOC (64 << 10)
/* A Lua string object is its bytes plus a header; leave room for the header when capping. */
#define MG_SB_STRING_HEADER 64

/* Light userdata keys: unique addresses. */
static const char timeout_key = 0; /* the error object raised when the deadline passed */
static const char proxy_key = 0;   /* marks proxy metatables */
static const char base_key = 0;    /* registry: the raw table of sandbox globals */

mg_sandbox_t *mg_sandbox_of(lua_State *L)
{
    return *(mg_sandbox_t **)lua_getextraspace(L);
}

/* ---- where ----------------------------------------------------------------------------------- */

void mg_lua_where(lua_State *L, char *buf, size_t len)
{
    lua_Debug ar;
    for (int level = 0; level < 32 && lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) break;
        if (ar.currentline > 0) {
            snprintf(buf, len, "%s:%d", ar.short_src, ar.currentline);
            return;
        }
    }
    snprintf(buf, len, "?");
}

/* ---- CPU ------------------------------------------------------------------------------------- */

static void hook(lua_State *L, lua_Debug *ar);

/* From now on the hook fires on every instruction: whatever catches the timeout error gets one
 * instruction before the next one is raised. */
static void expire(mg_sandbox_t *sb, lua_State *L)
{
    if (sb->expired) return;
    sb->expired = true;
    if (!sb->first_limit) sb->first_limit = 'c';
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
}

static void raise_timeout(lua_State *L, mg_sandbox_t *sb)
{
    expire(sb, L);
    if (!sb->where[0]) mg_lua_where(L, sb->where, sizeof sb->where);
    lua_pushlightuserdata(L, (void *)&timeout_key); /* not a string: no message a pcall can parse */
    lua_error(L);
}

static int64_t thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The slow path, once the wall deadline has passed: true when the budget is really spent. The
 * first passage opens a grace of budget / 2 (within 1..10 ms) of *CPU* time; the call fails once
 * the thread has used that much CPU since. A decision that was merely preempted finishes long
 * before; a runaway one is stopped after the grace whatever share of a core it gets. */
static bool spent(mg_sandbox_t *sb, int64_t now)
{
    int64_t cpu = thread_cpu_us();
    int64_t grace = MG_MIN(10000, MG_MAX(1000, sb->budget_ms * 1000 / 2));
    if (!sb->mark_us) {
        sb->mark_us = now;
        sb->mark_cpu_us = cpu;
        sb->deadline_us = now + grace;
        return false;
    }
    int64_t used = cpu - sb->mark_cpu_us;
    if (used >= grace) return true;
    sb->deadline_us = now + (grace - used); /* the earliest wall time the rest can be used up */
    return false;
}

/* Whether the current call is out of time (cheap unless the wall deadline has passed). */
static bool out_of_time(mg_sandbox_t *sb)
{
    if (sb->expired) return true;
    if (sb->deadline_us == 0) return false;
    int64_t now = mg_now_us();
    return now >= sb->deadline_us && spent(sb, now);
}

static void hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    mg_sandbox_t *sb = mg_sandbox_of(L);
    if (out_of_time(sb)) raise_timeout(L, sb);
}

void mg_lua_check_deadline(lua_State *L)
{
    mg_sandbox_t *sb = mg_sandbox_of(L);
    if (out_of_time(sb)) raise_timeout(L, sb);
}

void mg_sandbox_arm(mg_sandbox_t *sb, int64_t budget_ms)
{
    sb->budget_ms = budget_ms;
    sb->deadline_us = mg_now_us() + budget_ms * 1000;
    sb->mark_us = sb->mark_cpu_us = 0;
    sb->expired = sb->mem_refused = sb->string_refused = false;
    sb->first_limit = 0;
    sb->where[0] = '\0';
    lua_sethook(sb->L, hook, LUA_MASKCOUNT, sb->interval);
}

void mg_sandbox_disarm(mg_sandbox_t *sb)
{
    sb->deadline_us = 0;
}

/* ---- memory ---------------------------------------------------------------------------------- */

/* The allocator of every sandboxed state (lua_Alloc). ptr == NULL means a new object and then
 * osize is its type tag, not a size. Shrinking never fails (Lua relies on that). */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mg_sandbox_t *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->mem_used -= old;
        return NULL;
    }
    if (nsize > old) {
        size_t grow = nsize - old;
        bool too_long =
            !ptr && osize == LUA_TSTRING && nsize > sb->max_string + MG_SB_STRING_HEADER;
        if (too_long || sb->mem_used + grow > sb->mem_limit) {
            if (too_long) sb->string_refused = true;
            sb->mem_refused = true;
            if (!sb->first_limit) sb->first_limit = too_long ? 's' : 'm';
            if (sb->L && !sb->where[0]) mg_lua_where(sb->L, sb->where, sizeof sb->where);
            return NULL;
        }
        if (grow >= MG_SB_BIG_ALLOC && sb->L && out_of_time(sb))
            expire(sb, sb->L); /* the next instruction raises */
    }
    void *np = realloc(ptr, nsize);
    if (!np) {
        if (nsize <= old) return ptr; /* keep the larger block */
        sb->mem_refused = true;       /* the machine is out of memory: an ordinary Lua error */
        return NULL;
    }
    sb->mem_used = sb->mem_used - old + nsize;
    if (sb->mem_used > sb->mem_peak) sb->mem_peak = sb->mem_used;
    return np;
}

/* ---- logging --------------------------------------------------------------------------------- */

static void default_log(mg_sandbox_t *sb, int level, const char *msg)
{
    (void)sb;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    fprintf(stderr, "lua %s: %s\n", names[level & 3], msg);
}

static void sb_warnf(void *ud, const char *msg, int tocont)
{
    mg_sandbox_t *sb = ud;
    if (sb->warnlen == 0 && !tocont && msg[0] == '@') return; /* control message ("@on") */
    size_t n = strlen(msg), room = sizeof sb->warnbuf - 1 - sb->warnlen;
    if (n > room) n = room;
    memcpy(sb->warnbuf + sb->warnlen, msg, n);
    sb->warnlen += n;
    sb->warnbuf[sb->warnlen] = '\0';
    if (tocont) return;
    sb->log(sb, MG_SB_WARN, sb->warnbuf);
    sb->warnlen = 0;
}

/* print(...): one log line at INFO, arguments separated by tabs (tostring applies). */
static int sb_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    mg_sandbox_t *sb = mg_sandbox_of(L);
    sb->log(sb, MG_SB_INFO, lua_tostring(L, -1));
    return 0;
}

/* ---- wrapped library functions --------------------------------------------------------------- */

/* A library function whose cost grows with its input: check the clock first. The original is
 * upvalue 1; none of the wrapped functions uses upvalues of its own. */
static int guarded(lua_State *L)
{
    mg_lua_check_deadline(L);
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    return f(L);
}

static int sb_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") != 0)
        return luaL_error(L, "collectgarbage(\"%s\") is not allowed in a policy (only \"count\")",
                          opt);
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) +
                          (lua_Number)lua_gc(L, LUA_GCCOUNTB, 0) / 1024);
    return 1;
}

/* setmetatable without finalizers: a __gc would run at an arbitrary later moment (another
 * request's decision, or while the state is being closed). */
static int sb_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in policies");
        lua_pop(L, 1);
    }
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    return f(L);
}

/* A Lua error raised from the count hook leaves hooks disabled (lua_State.allowhook) until the
 * nearest protected call unwinds, and the message handler of an xpcall runs before that: a
 * handler looping there would never be interrupted. So user handlers are wrapped: once the
 * deadline has passed they are not called at all and the error passes through unchanged. */
static int handler_guard(lua_State *L)
{
    if (mg_sandbox_of(L)->expired) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sb_xpcall(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, handler_guard, 1);
    lua_replace(L, 2);
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    return f(L);
}

/* load(chunk [, name [, mode [, env]]]) in text mode only; the default env is the sandbox's. */
static int sb_load(lua_State *L)
{
    mg_lua_check_deadline(L);
    if (lua_gettop(L) < 3) lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    return f(L);
}

/* string.rep with the result size checked before any work: the stock version loops n times even
 * when the result is empty (string.rep("", 2^60)). */
static int sb_rep(lua_State *L)
{
    size_t l, lsep;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    mg_lua_check_deadline(L);
    if (n > 0) {
        mg_sandbox_t *sb = mg_sandbox_of(L);
        if (l + lsep == 0) {
            lua_pushliteral(L, "");
            return 1;
        }
        if ((uint64_t)n > sb->max_string / (l + lsep) + 1)
            return luaL_error(L, "string.rep: result longer than the limit of %d bytes",
                              (int)sb->max_string);
    }
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    return f(L);
}

/* table.move moves element by element in C without ever running the hook: cap the count. */
static int sb_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    mg_lua_check_deadline(L);
    if (e >= f && (e - f) >= 100000)
        return luaL_error(L, "table.move: too many elements for a policy");
    lua_CFunction fn = lua_tocfunction(L, lua_upvalueindex(1));
    return fn(L);
}

/* table.sort without a comparator runs entirely in C: a policy sorts candidate lists, not data. */
static int sb_sort(lua_State *L)
{
    mg_lua_check_deadline(L);
    if (lua_type(L, 1) == LUA_TTABLE && luaL_len(L, 1) > 10000)
        return luaL_error(L, "table.sort: too many elements for a policy");
    lua_CFunction fn = lua_tocfunction(L, lua_upvalueindex(1));
    return fn(L);
}

static int undefined_global(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "undefined global '%s'", lua_tostring(L, 2));
    return luaL_error(L, "undefined global (a %s key)", luaL_typename(L, 2));
}

/* ---- proxies --------------------------------------------------------------------------------- */

static int ro_newindex(lua_State *L)
{
    const char *what = lua_tostring(L, lua_upvalueindex(1));
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "attempt to set '%s' in %s, which is read-only", lua_tostring(L, 2),
                          what);
    return luaL_error(L, "attempt to set a %s key in %s, which is read-only", luaL_typename(L, 2),
                      what);
}

/* Pushes the table behind proxy idx (its metatable's __index, read raw). */
static void push_target(lua_State *L, int idx)
{
    lua_getmetatable(L, idx); /* raw access: __metatable does not hide it from C */
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    lua_remove(L, -2);
}

static int ro_len(lua_State *L)
{
    push_target(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

static int ro_next(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1))) return 2;
    lua_pushnil(L);
    return 1;
}

/* pairs(proxy): the iterator closes over the real table, so it never reaches the caller (a
 * `next, t` pair would hand out the writable table). */
static int ro_pairs(lua_State *L)
{
    push_target(L, 1);
    lua_pushcclosure(L, ro_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void mg_lua_protect(lua_State *L, int idx, const char *what)
{
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 0); /* the proxy: always empty, so every write reaches __newindex */
    lua_createtable(L, 0, 6);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, what);
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, ro_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, ro_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushboolean(L, 1);
    lua_rawsetp(L, -2, &proxy_key);
    lua_setmetatable(L, -2);
}

bool mg_lua_unprotect(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return false;
    int marked = lua_rawgetp(L, -1, &proxy_key) != LUA_TNIL;
    lua_pop(L, 1);
    if (!marked) {
        lua_pop(L, 1);
        return false;
    }
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    return true;
}

void mg_sandbox_push_globals(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &base_key);
}

/* ---- building the state ---------------------------------------------------------------------- */

/* Copies the named fields of the table at src into the table at dst; a name starting with '!'
 * is wrapped with the guard (deadline check before the call). */
static void copy_fields(lua_State *L, int src, int dst, const char *const *names)
{
    for (; *names; names++) {
        const char *name = *names;
        bool guard = name[0] == '!';
        if (guard) name++;
        lua_getfield(L, src, name);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (guard) lua_pushcclosure(L, guarded, 1);
        lua_setfield(L, dst, name);
    }
}

/* Replaces dst[name] with fn closed over the original src[name]. */
static void wrap_field(lua_State *L, int src, int dst, const char *name, lua_CFunction fn)
{
    lua_getfield(L, src, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, dst, name);
}

static const char *const base_names[] = {
    "assert",   "error",    "getmetatable", "ipairs",   "next",   "pairs",
    "pcall",    "rawequal", "rawlen",       "rawget",   "select", "tonumber",
    "tostring", "type",     "warn",         "_VERSION", NULL,
};
static const char *const string_names[] = {
    "!byte",    "!char", "!format", "len",      "!lower",  "!upper",
    "!reverse", "!sub",  "!pack",   "packsize", "!unpack", NULL,
};
static const char *const table_names[] = {"!concat", "!insert", "!remove",
                                          "!pack",   "!unpack", NULL};
static const char *const math_names[] = {
    "abs",       "ceil", "cos",    "deg",        "exp",  "floor",      "fmod",
    "huge",      "log",  "max",    "maxinteger", "min",  "mininteger", "modf",
    "pi",        "rad",  "random", "randomseed", "sin",  "sqrt",       "tan",
    "tointeger", "type", "ult",    "atan",       "asin", "acos",       NULL,
};
static const char *const utf8_names[] = {"!char", "charpattern", "!codes", "!codepoint",
                                         "!len",  "!offset",     NULL};
static const char *const os_names[] = {"time", "clock", "!date", NULL};

/* Builds base[global] from the stock library restricted to names (stock tables stay only in
 * the registry's _LOADED, out of reach) and leaves the raw, unprotected copy on the stack. */
static void add_lib(lua_State *L, int base, const char *global, lua_CFunction open,
                    const char *const *names)
{
    luaL_requiref(L, global, open, 0);
    int src = lua_gettop(L);
    lua_newtable(L);
    int dst = lua_gettop(L);
    copy_fields(L, src, dst, names);
    if (!strcmp(global, LUA_STRLIBNAME)) {
        wrap_field(L, src, dst, "rep", sb_rep);
        mg_lua_pattern_register(L, dst);
    } else if (!strcmp(global, LUA_TABLIBNAME)) {
        wrap_field(L, src, dst, "move", sb_move);
        wrap_field(L, src, dst, "sort", sb_sort);
    }
    mg_lua_protect(L, dst, global);
    lua_setfield(L, base, global);
    lua_remove(L, src);
}

/* Runs inside lua_pcall: builds the sandbox globals and makes them the state's global table. */
static int setup(lua_State *L)
{
    luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
    int real = lua_gettop(L); /* the stock global table: kept away from chunks */
    lua_newtable(L);
    int base = lua_gettop(L);
    copy_fields(L, real, base, base_names);
    wrap_field(L, real, base, "setmetatable", sb_setmetatable);
    wrap_field(L, real, base, "load", sb_load);
    wrap_field(L, real, base, "xpcall", sb_xpcall);
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setfield(L, base, "collectgarbage");
    lua_pushcfunction(L, sb_print);
    lua_setfield(L, base, "print");

    add_lib(L, base, LUA_STRLIBNAME, luaopen_string, string_names);
    int str = lua_gettop(L);
    add_lib(L, base, LUA_TABLIBNAME, luaopen_table, table_names);
    add_lib(L, base, LUA_MATHLIBNAME, luaopen_math, math_names);
    add_lib(L, base, LUA_UTF8LIBNAME, luaopen_utf8, utf8_names);
    add_lib(L, base, LUA_OSLIBNAME, luaopen_os, os_names);
    lua_pop(L, 4);

    /* Method calls on strings ("x"):upper() use the sandbox's string table; getmetatable("")
     * returns false, so the shared string metatable cannot be changed. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, str);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    lua_createtable(L, 0, 1); /* reads of unknown globals raise */
    lua_pushcfunction(L, undefined_global);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, base);

    mg_lua_protect(L, base, "the global table");
    lua_pushvalue(L, -1);
    lua_setfield(L, base, LUA_GNAME); /* _G is the protected view */
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushvalue(L, base);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &base_key);
    return 0;
}

static int panic(lua_State *L)
{
    /* An error outside any protected call is a bug in the host, never the policy's doing. */
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
    fprintf(stderr, "moongate: unprotected Lua error (bug): %s\n", msg);
    abort();
}

mg_sandbox_t *mg_sandbox_new(const mg_sandbox_limits_t *limits, char *err, size_t errlen)
{
    mg_sandbox_t *sb = mg_xcalloc(1, sizeof *sb);
    sb->mem_limit = limits && limits->mem_bytes > 0 ? (size_t)limits->mem_bytes : MG_SB_DEFAULT_MEM;
    sb->max_string =
        limits && limits->max_string > 0 ? (size_t)limits->max_string : MG_SB_DEFAULT_STRING;
    sb->interval =
        limits && limits->check_interval > 0 ? limits->check_interval : MG_SB_DEFAULT_INTERVAL;
    sb->log = default_log;
    lua_State *L = lua_newstate(sb_alloc, sb);
    if (!L) {
        snprintf(err, errlen, "cannot create a Lua state within the memory limit of %zu bytes",
                 sb->mem_limit);
        free(sb);
        return NULL;
    }
    sb->L = L;
    *(mg_sandbox_t **)lua_getextraspace(L) = sb;
    lua_atpanic(L, panic);
    lua_setwarnf(L, sb_warnf, sb);
    /* Incremental GC, Lua's default: against LUA_GCGEN, bench/policy_bench.c showed no difference
     * beyond noise (a decision allocates a few small tables, a state holds ~65 KiB), and it is
     * the collector with the longer track record in 5.4. */
    lua_gc(L, LUA_GCINC, 0, 0, 0);
    /* setup gets the load budget's worth of time implicitly: no deadline, it runs no chunk code */
    if (mg_sandbox_cpcall(sb, setup, NULL, err, errlen)) {
        mg_sandbox_free(sb);
        return NULL;
    }
    return sb;
}

void mg_sandbox_free(mg_sandbox_t *sb)
{
    if (!sb) return;
    if (sb->L) {
        /* Whatever Lua runs while closing (a pending __close) gets no CPU at all. */
        sb->deadline_us = 1;
        sb->expired = true;
        lua_sethook(sb->L, hook, LUA_MASKCOUNT, 1);
        lua_close(sb->L);
    }
    free(sb);
}

/* ---- calls ----------------------------------------------------------------------------------- */

/* The message handler: turns any error object into "file:line: message" without calling a
 * single metamethod (an error object's __tostring could loop or raise again). */
int mg_lua_msgh(lua_State *L)
{
    mg_sandbox_t *sb = mg_sandbox_of(L);
    char where[160];
    if (lua_type(L, 1) == LUA_TSTRING) return 1; /* already "file:line: message" */
    if (lua_touserdata(L, 1) == &timeout_key) {
        lua_pushfstring(L, "%s: CPU budget of %d ms exceeded", sb->where[0] ? sb->where : "?",
                        (int)sb->budget_ms);
        return 1;
    }
    mg_lua_where(L, where, sizeof where);
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_pushliteral(L, "message");
        if (lua_rawget(L, 1) == LUA_TSTRING) {
            lua_pushfstring(L, "%s: %s", where, lua_tostring(L, -1));
            return 1;
        }
    }
    lua_pushfstring(L, "%s: error object is a %s value", where, luaL_typename(L, 1));
    return 1;
}

static void copy_message(char *err, size_t errlen, const char *msg)
{
    if (!errlen) return;
    snprintf(err, errlen, "%s", msg);
}

int mg_sandbox_pcall(mg_sandbox_t *sb, int nargs, int nresults, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    int fn = lua_gettop(L) - nargs;
    lua_pushcfunction(L, mg_lua_msgh);
    lua_insert(L, fn);
    int status = lua_pcall(L, nargs, nresults, fn);
    lua_remove(L, fn);
    if (status == LUA_OK && !sb->expired && !sb->mem_refused) return 0;

    const char *msg =
        status != LUA_OK && lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    const char *where = sb->where[0] ? sb->where : "?";
    char buf[MG_SANDBOX_ERR_MAX];
    if (sb->first_limit == 'c') {
        snprintf(buf, sizeof buf, "%s: CPU budget of %d ms exceeded", where, (int)sb->budget_ms);
    } else if (sb->first_limit == 's') {
        snprintf(buf, sizeof buf, "%s: string longer than the limit of %zu bytes", where,
                 sb->max_string);
    } else if (sb->first_limit == 'm' || sb->mem_refused || status == LUA_ERRMEM) {
        snprintf(buf, sizeof buf, "%s: memory limit of %zu KiB exceeded", where,
                 sb->mem_limit >> 10);
    } else if (status == LUA_ERRERR) {
        char w[160];
        mg_lua_where(L, w, sizeof w);
        snprintf(buf, sizeof buf, "%s: error in error handling (%s)", w, msg ? msg : "no message");
    } else {
        snprintf(buf, sizeof buf, "%s", msg ? msg : "error object is not a string");
    }
    copy_message(err, errlen, buf);
    if (sb->expired || sb->mem_refused || status == LUA_ERRMEM || status == LUA_ERRERR)
        sb->poisoned = true;
    lua_settop(L, fn - 1);
    return -1;
}

int mg_sandbox_cpcall(mg_sandbox_t *sb, lua_CFunction fn, void *ud, char *err, size_t errlen)
{
    lua_pushcfunction(sb->L, fn);
    lua_pushlightuserdata(sb->L, ud);
    return mg_sandbox_pcall(sb, 1, 0, err, errlen);
}

int mg_sandbox_load(mg_sandbox_t *sb, const char *text, size_t len, const char *chunkname,
                    int env_idx, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    if (env_idx) env_idx = lua_absindex(L, env_idx);
    sb->mem_refused = sb->string_refused = false;
    int status = luaL_loadbufferx(L, text, len, chunkname, "t");
    if (status != LUA_OK) {
        if (status == LUA_ERRMEM || sb->mem_refused)
            snprintf(err, errlen, "%s: memory limit of %zu KiB exceeded while compiling",
                     chunkname + 1, sb->mem_limit >> 10);
        else
            copy_message(err, errlen,
                         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "cannot compile");
        lua_pop(L, 1);
        if (status == LUA_ERRMEM) sb->poisoned = true;
        return -1;
    }
    if (env_idx) {
        lua_pushvalue(L, env_idx);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 0;
}
