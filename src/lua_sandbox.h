/* The Lua sandbox: one lua_State with an allow-listed standard library, a counting allocator with
 * a per-state memory limit, a CPU deadline enforced by a count hook that a pcall cannot swallow,
 * and read-only proxy tables. Knows nothing of routing, the catalog or HTTP (lua_api.c builds the
 * `gw` table on top of it; policy.c owns the states).
 *
 * What a sandboxed chunk can reach (STYLE 12): base (no dofile/loadfile/require/rawset; load is
 * text-only; collectgarbage only "count"; setmetatable refuses __gc; print goes to the log),
 * string (no dump; find/match/gmatch/gsub are lua_pattern.c's step-limited matcher), table, math,
 * utf8, and os.time/os.clock/os.date. No io, os beyond those, package, debug or coroutine.
 *
 * Limits (why each exists):
 *  - CPU: lua_sethook(LUA_MASKCOUNT, interval) checks a monotonic deadline; once it has passed the
 *    hook re-arms itself to fire on every instruction and raises a non-string error object, so a
 *    `pcall` loop gets at most one instruction before the next raise. Library functions whose
 *    cost grows with their input check the deadline before and after running, and large
 *    allocations re-arm the hook, so one expensive instruction cannot hide the deadline for a
 *    whole interval. The table functions that loop in C over a range the policy chooses
 *    (insert, remove, move, concat, unpack; sort, in its comparisons) look at the clock every few
 *    steps, and the functions that return one value per element return at most 10000. A call
 *    that ends past its budget fails even when nothing stopped it on the way (a slow C call).
 *    Preemption: a wall-clock deadline alone would fail decisions whose thread was merely
 *    descheduled on a busy machine. So when it passes, the thread's CPU clock (a syscall, read
 *    only on this slow path) takes over: the call fails once it has used a further budget / 2
 *    (within 1..10 ms) of CPU. A preempted decision finishes long before; a runaway one is
 *    stopped at budget + grace on an idle core, later in proportion on a contended one. A single
 *    library call that runs past the deadline is judged the same way: the thread's CPU clock is
 *    read once per armed budget, at its first guarded library call, and when the deadline is
 *    first seen passed with budget + grace of CPU used since then, the call fails at once.
 *  - Memory: the allocator counts live bytes per state and returns NULL past the limit; strings
 *    longer than max_string are refused too (that caps the cost of any single string operation).
 *  A state that hit a limit is "poisoned": the owner must discard it and build a new one.
 *
 * Functions marked LJMP may raise a Lua error (longjmp) and must only run inside a protected call
 * with no C resources held (STYLE 18). The others never raise. */
#pragma once
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_SANDBOX_ERR_MAX 512

typedef struct mg_sandbox_limits {
    int64_t mem_bytes;  /* live bytes per state; default 32 MiB */
    int64_t max_string; /* longest string a chunk may create; default 256 KiB */
    int check_interval; /* instructions between deadline checks; default 1000 */
} mg_sandbox_limits_t;

typedef struct mg_sandbox {
    lua_State *L;
    /* allocator (touched only by the owning thread) */
    size_t mem_used, mem_peak, mem_limit, max_string;
    bool mem_refused;    /* an allocation was refused since the last arm: the state is poisoned */
    bool string_refused; /* ... because a string would exceed max_string */
    /* CPU */
    int64_t deadline_us;          /* monotonic; 0 = no deadline (setup, close) */
    int64_t mark_us, mark_cpu_us; /* when the wall deadline first passed (wall, thread CPU) */
    int64_t start_cpu_us;         /* thread CPU at the first guarded library call; -1 none */
    int64_t budget_ms;            /* for messages */
    int interval;
    bool expired; /* the deadline passed during this call: the state is poisoned */
    bool poisoned;
    char first_limit; /* 'c' CPU, 'm' memory, 's' string: the limit hit first, for the message */
    char where[160];  /* "file:line" where the first limit was hit, for messages */
    void *host;       /* lua_api's per-state data; borrowed */
    void (*log)(struct mg_sandbox *sb, int level, const char *msg); /* print() and warn() */
    char warnbuf[512]; /* warn() pieces until the message is complete */
    size_t warnlen;
} mg_sandbox_t;

/* Creates a state with the allow-listed library. Returns NULL with err filled when the state
 * cannot be built (e.g. mem_bytes too small). Free with mg_sandbox_free. */
mg_sandbox_t *mg_sandbox_new(const mg_sandbox_limits_t *limits, char *err, size_t errlen);
/* Closes the state (any Lua code that still runs, e.g. a __close handler, gets no CPU). NULL ok. */
void mg_sandbox_free(mg_sandbox_t *sb);

/* The sandbox of L (from lua_getextraspace). */
mg_sandbox_t *mg_sandbox_of(lua_State *L);

/* Starts a budget of budget_ms for the next protected call(s) and clears the limit flags. */
void mg_sandbox_arm(mg_sandbox_t *sb, int64_t budget_ms);
/* Ends the budget (the hook stays installed but finds no deadline). */
void mg_sandbox_disarm(mg_sandbox_t *sb);

/* lua_pcall with the sandbox's message handler. The function and its nargs arguments are on the
 * stack; on success nresults values replace them and 0 is returned. On failure (an error, or a
 * limit hit even if the chunk caught it) returns -1 with the stack restored to below the function
 * and err = "file:line: message" (always NUL-terminated; at most MG_SANDBOX_ERR_MAX bytes are
 * useful). A limit hit sets sb->poisoned. */
int mg_sandbox_pcall(mg_sandbox_t *sb, int nargs, int nresults, char *err, size_t errlen);

/* Like mg_sandbox_pcall for a C function: pushes fn and the light userdata ud, calls it protected
 * with no results. fn finds ud at index 1. */
int mg_sandbox_cpcall(mg_sandbox_t *sb, lua_CFunction fn, void *ud, char *err, size_t errlen);

/* luaL_loadbufferx in text mode, whose refusal of a binary chunk names the file (Lua's own
 * message does not): what every admin-written file (policy, tests, error patterns) is read with. */
int mg_lua_load_text(lua_State *L, const char *text, size_t len, const char *chunkname);

/* Compiles text (text mode only: binary chunks are refused) as chunkname ("@path" or "=name") and
 * pushes the function with its _ENV set to the table at env_idx (0 = the sandbox's globals).
 * Returns 0, or -1 with err filled and nothing pushed. Never raises. */
int mg_sandbox_load(mg_sandbox_t *sb, const char *text, size_t len, const char *chunkname,
                    int env_idx, char *err, size_t errlen);

/* Pushes the raw (unprotected) table of sandbox globals, to which the host adds entries before
 * any chunk runs. Reads of names it lacks raise "undefined global". LJMP (allocation). */
void mg_sandbox_push_globals(lua_State *L);

/* Pushes a read-only proxy for the table at idx: reads go to the table, writes raise, `#`, pairs
 * and ipairs work, getmetatable returns false and setmetatable fails. what names the table in the
 * write error ("gw.catalog"). LJMP. */
void mg_lua_protect(lua_State *L, int idx, const char *what);
/* Whether the value at idx is a proxy made by mg_lua_protect; pushes the proxied table if so. */
bool mg_lua_unprotect(lua_State *L, int idx);

/* The sandbox's message handler, for hosts that run a nested lua_pcall of their own: turns any
 * error object into "file:line: message" without calling a metamethod. */
int mg_lua_msgh(lua_State *L);

/* Raises the timeout error if the deadline has passed. Called by library functions before
 * expensive work. LJMP. */
void mg_lua_check_deadline(lua_State *L);

/* Fills buf with "file:line" of the innermost Lua function on the stack ("?" when none). */
void mg_lua_where(lua_State *L, char *buf, size_t len);

/* Log levels passed to sb->log (the values of mg_log_level_t). print() logs at INFO, warn() at
 * WARN. sb->log defaults to a line on stderr; lua_api points it at the policy log. */
enum { MG_SB_DEBUG, MG_SB_INFO, MG_SB_WARN, MG_SB_ERROR };
