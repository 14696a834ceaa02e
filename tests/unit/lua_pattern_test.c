/* Differential tests for lua_pattern.c: string.find/match/gmatch/gsub in a sandbox state must
 * give exactly what the stock Lua 5.4 library gives (results and error messages), over a corpus
 * of hand-written cases and many random short patterns and subjects. */
#include "lua_sandbox.h"
#include "mg_test.h"
#include "util.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

MG_TEST_MAIN()

/* Returns one string describing every function's result for (s, p, init). */
static const char *const PROBE =
    "local function ser(...)\n"
    "  local t = {}\n"
    "  for i = 1, select('#', ...) do local v = select(i, ...) t[i] = type(v) .. ':' .. "
    "tostring(v) end\n"
    "  return table.concat(t, ',')\n"
    "end\n"
    "local function try(f, ...)\n"
    "  local r = table.pack(pcall(f, ...))\n"
    "  if not r[1] then return 'ERR ' .. tostring(r[2]) end\n"
    "  return ser(table.unpack(r, 2, r.n))\n"
    "end\n"
    "return function(s, p, init)\n"
    "  local out = {}\n"
    "  out[#out + 1] = try(string.find, s, p)\n"
    "  out[#out + 1] = try(string.find, s, p, init)\n"
    "  out[#out + 1] = try(string.find, s, p, init, true)\n"
    "  out[#out + 1] = try(string.match, s, p)\n"
    "  out[#out + 1] = try(string.match, s, p, init)\n"
    "  out[#out + 1] = try(function()\n"
    "    local acc, n = {}, 0\n"
    "    for a, b in string.gmatch(s, p) do n = n + 1 if n > 40 then break end acc[#acc + 1] = "
    "ser(a, b) end\n"
    "    return table.concat(acc, ';')\n"
    "  end)\n"
    "  out[#out + 1] = try(function()\n"
    "    local acc = {}\n"
    "    for a in string.gmatch(s, p, init) do acc[#acc + 1] = ser(a) if #acc > 40 then break end "
    "end\n"
    "    return table.concat(acc, ';')\n"
    "  end)\n"
    "  out[#out + 1] = try(string.gsub, s, p, '<%0>')\n"
    "  out[#out + 1] = try(string.gsub, s, p, '[%1]')\n"
    "  out[#out + 1] = try(string.gsub, s, p, '%%')\n"
    "  out[#out + 1] = try(string.gsub, s, p, '%x')\n"
    "  out[#out + 1] = try(string.gsub, s, p, '#', 2)\n"
    "  out[#out + 1] = try(string.gsub, s, p, function(a, b) return b and (a .. '|' .. "
    "tostring(b)) or nil end)\n"
    "  out[#out + 1] = try(string.gsub, s, p, {a = 'A', ab = false, [''] = 'E'})\n"
    "  out[#out + 1] = try(string.gsub, s, p, function() return {} end)\n"
    "  return table.concat(out, '\\n')\n"
    "end\n";

static lua_State *stock;
static mg_sandbox_t *sb;

static void setup(void)
{
    if (stock) return;
    stock = luaL_newstate();
    luaL_openlibs(stock);
    if (luaL_loadbuffer(stock, PROBE, strlen(PROBE), "=probe") || lua_pcall(stock, 0, 1, 0))
        abort();
    char err[256];
    mg_sandbox_limits_t lim = {0};
    sb = mg_sandbox_new(&lim, err, sizeof err);
    if (!sb) abort();
    if (mg_sandbox_load(sb, PROBE, strlen(PROBE), "=probe", 0, err, sizeof err)) abort();
    if (mg_sandbox_pcall(sb, 0, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
}

static char *run(lua_State *L, const char *s, size_t sl, const char *p, size_t pl, int init)
{
    lua_pushvalue(L, 1);
    lua_pushlstring(L, s, sl);
    lua_pushlstring(L, p, pl);
    lua_pushinteger(L, init);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) return mg_xasprintf("PCALL %s", lua_tostring(L, -1));
    char *out = mg_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

static int compare(const char *s, size_t sl, const char *p, size_t pl, int init)
{
    char *a = run(stock, s, sl, p, pl, init);
    char *b = run(sb->L, s, sl, p, pl, init);
    int same = strcmp(a, b) == 0;
    if (!same) {
        fprintf(stderr,
                "  subject \"%.*s\" pattern \"%.*s\" init %d:\n--- stock\n%s\n--- ours\n%s\n",
                (int)sl, s, (int)pl, p, init, a, b);
        mg_test_failures++;
    }
    free(a);
    free(b);
    return same;
}

MG_TEST(pattern_corpus)
{
    setup();
    static const char *const subjects[] = {
        "",
        "a",
        "hello world",
        "  key = value  ",
        "x-data-region: eu-west-1",
        "(foo(bar))baz",
        "THE (quick) fox",
        "abc123def456",
        "aaa",
        "a.b.c",
        "[brackets]",
        "tab\there",
        "%%percent%%",
        "caf\xc3\xa9",
        "ends with $",
        "^starts",
        "f(a(b)c)d",
        "THE QUICK BROWN FOX",
        "one,two,,three,",
        "\x01\x02\x7f\xff",
    };
    static const char *const patterns[] = {
        "",
        "a",
        "o",
        "l+",
        "l*",
        "l-",
        "l?",
        ".",
        ".-",
        ".*",
        "^h",
        "d$",
        "^$",
        "(o)",
        "()o()",
        "(l)(l)",
        "%a+",
        "%d+",
        "%s*=%s*",
        "^%s*(.-)%s*$",
        "(%w+)=(%w+)",
        "%w+",
        "[aeiou]",
        "[^aeiou]+",
        "[%a%d]+",
        "[a-c]+",
        "[]]",
        "[^]]",
        "[%]]",
        "%b()",
        "%bxy",
        "%f[%a]%a+",
        "%f[%w]",
        "%f[^%w]",
        "(a)%1",
        "(%a)%1",
        "([a-z])%1",
        "%.",
        "a.b",
        "$",
        "^",
        "x^",
        "%$",
        "[%-]",
        "[a-]",
        "[-a]",
        "%u+",
        "%l+",
        "%p+",
        "%c",
        "%x+",
        "%S+",
        "%D",
        "%W",
        "[^%s]+",
        "(",
        ")",
        "%",
        "[a",
        "(()",
        "%1",
        "%b",
        "%f",
        "%fx",
        "(.)(.)(.)(.)(.)(.)",
        "(h)(e)(l)(l)(o)",
        "((a)(b))",
        "(a*(.)%w(%s*))",
        "[%w_]+",
        ",",
        ",?",
        "[^,]*",
        "(-?%d+)",
        "%-",
        "a-b",
        "[.]",
        "[%.]",
        ".-$",
        "x*$",
        "(.-)%s",
        "é",
        "[\xc3][\xa9]",
        "%z",
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(subjects); i++)
        for (size_t j = 0; j < MG_ARRAY_LEN(patterns); j++)
            for (int init = -3; init <= 4; init += 7)
                compare(subjects[i], strlen(subjects[i]), patterns[j], strlen(patterns[j]), init);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static unsigned next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 32);
}

MG_TEST(pattern_random)
{
    setup();
    static const char subj_chars[] = "aab()x.%- 1Z]";
    static const char pat_chars[] = "aab()x.%%%-+*?^$[]^1bfZ%sd";
    int failures = 0;
    for (int n = 0; n < 6000 && failures < 5; n++) {
        char s[16], p[12];
        size_t sl = next() % 12, pl = next() % 10;
        for (size_t i = 0; i < sl; i++)
            s[i] = subj_chars[next() % (sizeof subj_chars - 1)];
        for (size_t i = 0; i < pl; i++)
            p[i] = pat_chars[next() % (sizeof pat_chars - 1)];
        s[sl] = p[pl] = '\0';
        if (!compare(s, sl, p, pl, (int)(next() % 7) - 3)) failures++;
    }
}

MG_TEST(pattern_embedded_zeros)
{
    setup();
    compare("a\0b", 3, "%z", 2, 1);
    compare("a\0b", 3, "\0", 1, 1);
    compare("a\0b\0", 4, "[\0]", 3, 1);
    compare("a\0b", 3, "a.b", 3, 1);
    compare("a\0b", 3, "%c", 2, 1);
}
