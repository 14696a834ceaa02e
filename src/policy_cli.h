/* The offline policy tools: `moongate route` (what would the policy do with this request, and
 * why) and `moongate test` (run policy test files, e.g. in an admin's CI). They load the config
 * and the policy exactly as the gateway does, and never send anything anywhere. Uses policy.c
 * and lua_testfile.c; main.c only parses the command line and calls these. */
#pragma once
#include <stdio.h>

/* `moongate route --config C --request REQ.json [--state STATE.json]`: prints the policy, the
 * request as the policy sees it, the plan (candidates with their options) or the rejection, the
 * decision trace and the time the decision took, to out. The request and state files use the
 * shapes of a test case's `request` and `state` tables (docs/POLICIES.md, "Testing").
 * Returns 0 when the policy decided (a plan or a rejection), 1 on a policy error, 2 when the
 * config, the policy or an input file cannot be loaded (the reason goes to stderr). */
int mg_cli_route(const char *config_path, const char *request_path, const char *state_path,
                 FILE *out);

/* `moongate test PATH`: runs every *.lua test file in the directory PATH (sorted by name), or
 * the single file PATH. Prints one line per case ("ok   file: name" or "FAIL file: name: why")
 * and then "N passed, N failed". Returns 0 when all passed, 1 when any failed (a file or case
 * that cannot be loaded counts as a failure), 2 when no test file was found. */
int mg_cli_test(const char *path, FILE *out);
