/* libFuzzer target for the JSON5 reader and, behind it, config validation.
 *
 * Parses the input; on success checks that every node of the tree has a position, then runs the
 * same bytes through mg_config_load_string (which parses again and validates). On failure checks
 * that the message has the "line:col: message" shape. Any broken invariant aborts, which is what a
 * fuzzer reports. Replayed over corpus/json5 and regression/json5 by ctest (replay_main.c). */
#include "config.h"
#include "fuzz_util.h"
#include "json5.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "json5 fuzz invariant broken: %s\n", what);
        abort();
    }
}

/* Depth is bounded by MG_JSON5_MAX_DEPTH, so recursion is fine. */
static size_t check_positions(const mg_json5_doc_t *doc, const cJSON *node)
{
    mg_json5_pos_t p = mg_json5_pos_of(doc, node);
    check(p.node == node, "node without a position");
    check(p.line >= 1 && p.column >= 1 && p.value_line >= p.line, "bad position");
    size_t n = 1;
    for (const cJSON *c = node->child; c; c = c->next) n += check_positions(doc, c);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    mg_json5_doc_t doc;
    char err[256];
    if (mg_json5_parse(text, size, &doc, err, sizeof err) != 0) {
        int line = 0, col = 0, used = 0;
        check(sscanf(err, "%d:%d: %n", &line, &col, &used) == 2 && used > 0, "error without line:col");
        check(line >= 1 && col >= 1 && err[used] != '\0', "bad error position or empty message");
        check(doc.root == NULL && doc.pos == NULL && doc.n_pos == 0 && doc.dups == NULL && doc.n_dups == 0,
              "doc not empty after failure");
        return 0;
    }
    check(check_positions(&doc, doc.root) == doc.n_pos, "position entries do not match the nodes");
    /* Each replaced key came earlier in the text than the key that replaced it. */
    for (size_t i = 0; i < doc.n_dups; i++) {
        const mg_json5_dup_t *d = &doc.dups[i];
        check(d->key && d->was_line >= 1 && d->was_column >= 1, "duplicate without a key or position");
        check(d->was_line < d->line || (d->was_line == d->line && d->was_column < d->column),
              "a duplicate key before the one it replaced");
    }
    mg_json5_free(&doc);

    mg_config_t *cfg = mg_config_load_string(text, size, "fuzz.json5", "/nonexistent", err, sizeof err);
    if (cfg) {
        for (size_t i = 0; i < cfg->n_default_chain; i++)
            check(mg_config_find_model(cfg, cfg->default_chain[i]->ref) == cfg->default_chain[i], "chain entry unresolvable");
        for (size_t i = 0; i < cfg->n_aliases; i++) check(cfg->aliases[i].model != NULL, "alias without a model");
        mg_config_free(cfg);
    } else {
        check(strncmp(err, "fuzz.json5:", 11) == 0, "config error without the file name");
    }
    return 0;
}
