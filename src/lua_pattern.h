/* Lua 5.4 patterns (string.find, match, gmatch, gsub) for the sandbox, written to the reference
 * manual (§6.4.1) with one addition: the matcher counts its steps and checks the sandbox deadline
 * every few thousand, so a pathological pattern (".-.-.-.-x" over a long header value) fails the
 * decision with the CPU-budget error instead of holding a serving thread for seconds. The stock
 * matcher runs entirely in C, where the count hook never fires. Plain find uses memmem (linear).
 *
 * Everything here may longjmp (STYLE 18). */
#pragma once
#include <lua.h>

/* Sets find, match, gmatch and gsub in the table at idx. LJMP. */
void mg_lua_pattern_register(lua_State *L, int idx);
