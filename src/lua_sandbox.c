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
/* The most values one library call may return (table.unpack, string.byte, ...): the stock limit
 * is the Lua stack (a million), and passing a million values on costs milliseconds per
 * instruction, which the count hook cannot see. A policy handles candidate lists. */
#define MG_SB_MAX_VALUES 10000
/* C loops sized by the policy look at the clock every this many steps (a power of two): a step
 * is one lua_geti/lua_seti, up to a 2000-table __index chain each. */
#define MG_SB_LOOP_CHECK 64

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
        /* Seen for the first time after a library call that ran through the deadline without a
         * check: if the thread has used budget + grace of CPU since the first library call, the
         * call was slow, not preempted, and the runaway rule would have stopped it already. */
        if (sb->start_cpu_us >= 0 && cpu - sb->start_cpu_us >= sb->budget_ms * 1000 + grace)
            return true;
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
    sb->start_cpu_us = -1;
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

/* A library function whose cost grows with its input: calls the original (upvalue 1; none of
 * the wrapped functions uses upvalues of its own) with the clock checked before and after. The
 * count hook never runs inside C, so a call that overran the budget fails where it was made,
 * even though nothing interrupted it. The wrappers below end by calling this. */
static int guarded(lua_State *L)
{
    mg_sandbox_t *sb = mg_sandbox_of(L);
    if (sb->start_cpu_us < 0 && sb->deadline_us) sb->start_cpu_us = thread_cpu_us();
    mg_lua_check_deadline(L);
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    int n = f(L);
    mg_lua_check_deadline(L);
    return n;
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

/* load's reader function, called by the parser for each piece: a piece may be 256 KiB of
 * comment that the lexer skips without an instruction or an allocation, so the clock is checked
 * per piece. The policy's reader is upvalue 1. */
static int load_reader(lua_State *L)
{
    mg_lua_check_deadline(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 0, 1);
    return 1;
}

/* load(chunk [, name [, mode [, env]]]) in text mode only; the default env is the sandbox's. */
static int sb_load(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, load_reader, 1);
        lua_replace(L, 1);
    }
    if (lua_gettop(L) < 3) lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    return guarded(L);
}

/* string.rep with the result size checked before any work: the stock version loops n times even
 * when the result is empty (string.rep("", 2^60)). */
static int sb_rep(lua_State *L)
{
    size_t l, lsep;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
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
    return guarded(L);
}

/* string.byte with at most MG_SB_MAX_VALUES results; the positions as lstrlib.c reads them. */
static int sb_byte(lua_State *L)
{
    size_t l;
    luaL_checklstring(L, 1, &l);
    lua_Integer pi = luaL_optinteger(L, 2, 1), pe = luaL_optinteger(L, 3, pi);
    lua_Integer len = (lua_Integer)l;
    size_t posi = pi > 0 ? (size_t)pi : pi == 0 || pi < -len ? 1 : l + (size_t)pi + 1;
    size_t pose = pe > len ? l : pe >= 0 ? (size_t)pe : pe < -len ? 0 : l + (size_t)pe + 1;
    if (posi <= pose && pose - posi >= MG_SB_MAX_VALUES)
        return luaL_error(L, "string.byte: more than %d results for a policy", MG_SB_MAX_VALUES);
    return guarded(L);
}

/* utf8.codepoint with at most MG_SB_MAX_VALUES bytes decoded; the positions as lutf8lib.c's. */
static lua_Integer u_posrelat(lua_Integer pos, size_t len)
{
    if (pos >= 0) return pos;
    if (0u - (size_t)pos > len) return 0;
    return (lua_Integer)len + pos + 1;
}

static int sb_codepoint(lua_State *L)
{
    size_t len;
    luaL_checklstring(L, 1, &len);
    lua_Integer posi = u_posrelat(luaL_optinteger(L, 2, 1), len);
    lua_Integer pose = u_posrelat(luaL_optinteger(L, 3, posi), len);
    if (posi >= 1 && pose <= (lua_Integer)len && posi <= pose && pose - posi >= MG_SB_MAX_VALUES)
        return luaL_error(L, "utf8.codepoint: more than %d bytes for a policy", MG_SB_MAX_VALUES);
    return guarded(L);
}

/* string.unpack returns one value per format item: at most MG_SB_MAX_VALUES (and the position).
 * The format is a string, so the work before the check is bounded by the string limit. */
static int sb_str_unpack(lua_State *L)
{
    int n = guarded(L);
    if (n > MG_SB_MAX_VALUES + 1)
        return luaL_error(L, "string.unpack: more than %d results for a policy", MG_SB_MAX_VALUES);
    return n;
}

/* ---- table functions that loop over a range the policy chooses ---------------------------------
 * ltablib.c's insert, remove, move, concat and unpack (Lua 5.4) loop in C over a range the policy
 * picks (an __len may claim any length), one lua_geti/lua_seti per step, each of which may follow
 * an __index chain of up to 2000 tables: no Lua instruction runs and nothing is allocated, so
 * neither the count hook nor the allocator would ever look at the clock, and the serving thread
 * hangs. These are the stock functions (same arguments, errors and results) with the clock
 * checked every MG_SB_LOOP_CHECK steps. */

#define MG_TAB_R 1 /* what a non-table must define to stand for one (ltablib's TAB_*) */
#define MG_TAB_W 2
#define MG_TAB_L 4

static bool has_field(lua_State *L, const char *key, int n)
{
    lua_pushstring(L, key);
    return lua_rawget(L, -n) != LUA_TNIL;
}

/* ltablib's checktab: a table, or a value whose metatable has the metamethods `what` needs. */
static void check_tab(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) == LUA_TTABLE) return;
    int n = 1;
    if (lua_getmetatable(L, arg) && (!(what & MG_TAB_R) || has_field(L, "__index", ++n)) &&
        (!(what & MG_TAB_W) || has_field(L, "__newindex", ++n)) &&
        (!(what & MG_TAB_L) || has_field(L, "__len", ++n)))
        lua_pop(L, n);
    else
        luaL_checktype(L, arg, LUA_TTABLE); /* raises */
}

static void loop_check(lua_State *L, lua_Unsigned step)
{
    if ((step & (MG_SB_LOOP_CHECK - 1)) == 0) mg_lua_check_deadline(L);
}

/* table.insert(t, [pos,] v) */
static int sb_insert(lua_State *L)
{
    check_tab(L, 1, MG_TAB_R | MG_TAB_W | MG_TAB_L);
    lua_Integer e = (lua_Integer)((lua_Unsigned)luaL_len(L, 1) + 1u); /* first empty element */
    lua_Integer pos;
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        for (lua_Integer i = e; i > pos; i--) { /* t[i] = t[i - 1] */
            loop_check(L, (lua_Unsigned)(e - i));
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
        }
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

/* table.remove(t [, pos]) */
static int sb_remove(lua_State *L)
{
    check_tab(L, 1, MG_TAB_R | MG_TAB_W | MG_TAB_L);
    lua_Integer size = luaL_len(L, 1);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size) /* pos given: in [1, size + 1] (5.4.4 blames argument 1) */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");
    lua_geti(L, 1, pos);                               /* the result: t[pos] */
    for (lua_Unsigned k = 0; pos < size; pos++, k++) { /* t[pos] = t[pos + 1] */
        loop_check(L, k);
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

/* table.move(a1, f, e, t [, a2]), at most 100000 elements (documented). */
static int sb_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* the destination table */
    check_tab(L, 1, MG_TAB_R);
    check_tab(L, tt, MG_TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        if (n > 100000) return luaL_error(L, "table.move: too many elements for a policy");
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer i = 0; i < n; i++) {
                loop_check(L, (lua_Unsigned)i);
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else { /* overlapping, moving up: from the end */
            for (lua_Integer i = n - 1; i >= 0; i--) {
                loop_check(L, (lua_Unsigned)(n - 1 - i));
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

static void concat_field(lua_State *L, luaL_Buffer *b, lua_Integer i)
{
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'", luaL_typename(L, -1),
                   i);
    luaL_addvalue(b);
}

/* table.concat(t [, sep [, i [, j]]]) */
static int sb_concat(lua_State *L)
{
    check_tab(L, 1, MG_TAB_R | MG_TAB_L);
    lua_Integer last = luaL_len(L, 1);
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (lua_Unsigned k = 0; i < last; i++, k++) {
        loop_check(L, k);
        concat_field(L, &b, i);
        luaL_addlstring(&b, sep, lsep);
    }
    if (i == last) concat_field(L, &b, i); /* the last one, if the range was not empty */
    luaL_pushresult(&b);
    return 1;
}

/* table.unpack(t [, i [, j]]), at most MG_SB_MAX_VALUES results. */
static int sb_unpack(lua_State *L)
{
    lua_Integer i = luaL_optinteger(L, 2, 1);
    lua_Integer e = luaL_opt(L, luaL_checkinteger, 3, luaL_len(L, 1));
    if (i > e) return 0;
    lua_Unsigned n = (lua_Unsigned)e - (lua_Unsigned)i; /* results - 1, without overflow */
    if (n >= MG_SB_MAX_VALUES)
        return luaL_error(L, "table.unpack: more than %d results for a policy", MG_SB_MAX_VALUES);
    if (!lua_checkstack(L, (int)++n)) return luaL_error(L, "too many results to unpack");
    for (lua_Unsigned k = 0; i < e; i++, k++) {
        loop_check(L, k);
        lua_geti(L, 1, i);
    }
    lua_geti(L, 1, e);
    return (int)n;
}

/* The comparison table.sort is given: the policy's function (upvalue 1) or `<` (nil), with the
 * clock checked every MG_SB_LOOP_CHECK comparisons (upvalue 2 counts them). The stock sort runs
 * in C between comparisons, and comparing two long strings is O(length): 10000 references to two
 * 200 KiB strings sort for seconds. */
static int sort_less(lua_State *L)
{
    lua_settop(L, 2);
    lua_Integer k = lua_tointeger(L, lua_upvalueindex(2));
    lua_pushinteger(L, k + 1);
    lua_replace(L, lua_upvalueindex(2));
    loop_check(L, (lua_Unsigned)k);
    if (lua_isnil(L, lua_upvalueindex(1))) {
        lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* table.sort(t [, comp]): at most 10000 elements (a policy sorts candidate lists, not data), by
 * the stock sort with the comparison above. */
static int sb_sort(lua_State *L)
{
    check_tab(L, 1, MG_TAB_R | MG_TAB_W | MG_TAB_L);
    lua_Integer n = luaL_len(L, 1);
    if (n > 10000) return luaL_error(L, "table.sort: too many elements for a policy");
    if (n <= 1) return 0; /* nothing to sort, nothing checked (as the stock sort) */
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, sort_less, 2); /* takes the comparison's place, at index 2 */
    return guarded(L);
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

/* dst[name] = fn, which replaces the original without calling it. */
static void set_fn(lua_State *L, int dst, const char *name, lua_CFunction fn)
{
    lua_pushcfunction(L, fn);
    lua_setfield(L, dst, name);
}

static const char *const base_names[] = {
    "assert",   "error",    "getmetatable", "ipairs",   "next",   "pairs",
    "pcall",    "rawequal", "rawlen",       "rawget",   "select", "tonumber",
    "tostring", "type",     "warn",         "_VERSION", NULL,
};
/* Not listed but wrapped in add_lib: string.rep, byte, unpack and the patterns; table.insert,
 * remove, move, concat, unpack and sort; utf8.codepoint. */
static const char *const string_names[] = {
    "!char", "!format", "len", "!lower", "!upper", "!reverse", "!sub", "!pack", "packsize", NULL,
};
static const char *const table_names[] = {"!pack", NULL};
static const char *const math_names[] = {
    "abs",       "ceil", "cos",    "deg",        "exp",  "floor",      "fmod",
    "huge",      "log",  "max",    "maxinteger", "min",  "mininteger", "modf",
    "pi",        "rad",  "random", "randomseed", "sin",  "sqrt",       "tan",
    "tointeger", "type", "ult",    "atan",       "asin", "acos",       NULL,
};
static const char *const utf8_names[] = {"!char", "charpattern", "!codes", "!len", "!offset", NULL};
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
        wrap_field(L, src, dst, "byte", sb_byte);
        wrap_field(L, src, dst, "unpack", sb_str_unpack);
        mg_lua_pattern_register(L, dst);
    } else if (!strcmp(global, LUA_TABLIBNAME)) {
        set_fn(L, dst, "insert", sb_insert);
        set_fn(L, dst, "remove", sb_remove);
        set_fn(L, dst, "move", sb_move);
        set_fn(L, dst, "concat", sb_concat);
        set_fn(L, dst, "unpack", sb_unpack);
        wrap_field(L, src, dst, "sort", sb_sort);
    } else if (!strcmp(global, LUA_UTF8LIBNAME)) {
        wrap_field(L, src, dst, "codepoint", sb_codepoint);
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
    /* A call that ends past its budget fails even when nothing stopped it on the way (C code
     * that never returned to a check), by the hook's rule: so a slow call cannot return a plan. */
    if (!sb->expired && out_of_time(sb)) expire(sb, L);
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

int mg_lua_load_text(lua_State *L, const char *text, size_t len, const char *chunkname)
{
    if (len >= 4 && memcmp(text, LUA_SIGNATURE, 4) == 0) {
        lua_pushfstring(L, "%s: a precompiled (binary) chunk; give the Lua source", chunkname + 1);
        return LUA_ERRSYNTAX;
    }
    return luaL_loadbufferx(L, text, len, chunkname, "t");
}

int mg_sandbox_load(mg_sandbox_t *sb, const char *text, size_t len, const char *chunkname,
                    int env_idx, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    if (env_idx) env_idx = lua_absindex(L, env_idx);
    sb->mem_refused = sb->string_refused = false;
    int status = mg_lua_load_text(L, text, len, chunkname);
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
