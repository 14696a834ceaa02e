/* Policy test files (`moongate test`) and request/state files (`moongate route`): reads them
 * into C cases through one path (a JSON file becomes a Lua table first), and checks a result
 * against a case's `expect` with the embedded lua/testing.lua. Test files run in their own
 * sandbox (lua_sandbox.c), never in a policy state. Uses json5.c for JSON files.
 *
 * The exported functions never raise (everything that may longjmp runs protected). */
#pragma once
#include "policy.h"

#include <stdbool.h>
#include <stddef.h>

/* ---- a static live view (tests, `moongate route --state`, the bench) ------------------------- */

typedef struct mg_live_entry {
    const char *name; /* model ref or provider id */
    bool provider;
    mg_live_state_t st;
} mg_live_entry_t;

typedef struct mg_live_static {
    mg_live_entry_t *entries;
    size_t n;
} mg_live_static_t;

/* A view answering from s (which must outlive it): entries match by exact ref / provider id. */
mg_live_view_t mg_live_static_view(const mg_live_static_t *s);

/* ---- cases -------------------------------------------------------------------------------------
 */

#define MG_TCASE_MAX_KV 32
#define MG_TCASE_MAX_REGIONS 16
#define MG_TCASE_MAX_LIVE 64

/* One request (and optional failure) with its fake live state. Owns every string it points to. */
typedef struct mg_tcase {
    const char *name;
    mg_route_input_t in; /* in.cfg is left NULL */
    mg_live_static_t live;
    bool has_failure;
    const char *failure_model; /* as written; the caller resolves failure.model */
    mg_failure_t failure;
    /* storage behind the pointers above */
    mg_kv_t headers[MG_TCASE_MAX_KV], metadata[MG_TCASE_MAX_KV];
    const char *allowed[MG_TCASE_MAX_REGIONS], *gateway[MG_TCASE_MAX_REGIONS];
    mg_live_entry_t live_entries[MG_TCASE_MAX_LIVE];
    char **owned;
    size_t n_owned, cap_owned;
} mg_tcase_t;

/* Frees the strings the case owns and zeroes it. */
void mg_tcase_clear(mg_tcase_t *c);

/* `moongate route`: the request file (required) and state file (optional), JSON or JSON5, in the
 * same shapes as a test case's `request` and `state` tables. Returns 0, or -1 with err. */
int mg_tcase_from_json(const char *request_path, const char *state_path, mg_tcase_t *out, char *err,
                       size_t errlen);

/* ---- test files ---------------------------------------------------------------------------------
 */

typedef struct mg_testfile mg_testfile_t;

/* Runs the test file (in a sandbox) and keeps the table it returns. NULL with err on failure. */
mg_testfile_t *mg_testfile_load(const char *path, char *err, size_t errlen);
void mg_testfile_free(mg_testfile_t *tf);
/* The config (required) and policy (optional, NULL) the file names, as absolute paths. */
const char *mg_testfile_config(const mg_testfile_t *tf);
const char *mg_testfile_policy(const mg_testfile_t *tf);
size_t mg_testfile_count(const mg_testfile_t *tf);
/* Case i (0-based) into out (cleared first). Returns 0, or -1 with err ("case 3: …"). */
int mg_testfile_case(mg_testfile_t *tf, size_t i, mg_tcase_t *out, char *err, size_t errlen);

/* What the policy did for a case, for mg_testfile_check. */
typedef struct mg_tresult {
    int rc;                          /* mg_policy_route / mg_policy_on_failure's return */
    const mg_plan_t *plan;           /* for route cases */
    const mg_failure_decision_t *fd; /* for failure cases */
} mg_tresult_t;

/* Compares with case i's `expect`: 1 = passed, 0 = failed (why says how), -1 = the case itself
 * is malformed (why says how). */
int mg_testfile_check(mg_testfile_t *tf, size_t i, const mg_tresult_t *r, char *why, size_t whylen);
