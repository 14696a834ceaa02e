/* Anthropic Messages codec. See api_anthropic.h; the wire facts are PROTOCOLS.md A.3 and the
 * translation notes B.1–B.5. */
#include "api_anthropic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_util.h"

#define API MG_API_ANTHROPIC_MESSAGES

/* ---- stop reasons and usage ---- */

const char *mg_anthropic_stop_reason(mg_ir_finish_t f)
{
    switch (f) {
    case MG_IR_FINISH_STOP_SEQUENCE: return "stop_sequence";
    case MG_IR_FINISH_LENGTH: return "max_tokens";
    case MG_IR_FINISH_TOOL_CALLS: return "tool_use";
    case MG_IR_FINISH_CONTENT_FILTER: return "refusal";
    case MG_IR_FINISH_PAUSE: return "pause_turn";
    case MG_IR_FINISH_CONTEXT_WINDOW: return "model_context_window_exceeded";
    default: return "end_turn";
    }
}

mg_ir_finish_t mg_anthropic_parse_stop_reason(const char *s)
{
    if (!s) return MG_IR_FINISH_NONE;
    if (strcmp(s, "stop_sequence") == 0) return MG_IR_FINISH_STOP_SEQUENCE;
    if (strcmp(s, "max_tokens") == 0) return MG_IR_FINISH_LENGTH;
    if (strcmp(s, "tool_use") == 0) return MG_IR_FINISH_TOOL_CALLS;
    if (strcmp(s, "refusal") == 0) return MG_IR_FINISH_CONTENT_FILTER;
    if (strcmp(s, "pause_turn") == 0) return MG_IR_FINISH_PAUSE;
    if (strcmp(s, "model_context_window_exceeded") == 0) return MG_IR_FINISH_CONTEXT_WINDOW;
    return MG_IR_FINISH_STOP;
}

/* Anthropic's own four counters; input_tokens excludes the cache (B.4). */
typedef struct raw_usage {
    int64_t input, output, cache_read, cache_write;
} raw_usage_t;

static void raw_usage_update(raw_usage_t *u, const cJSON *j)
{
    /* message_delta usage is cumulative: present fields overwrite (A.3). */
    u->input = mg_ir_jint(j, "input_tokens", u->input);
    u->output = mg_ir_jint(j, "output_tokens", u->output);
    u->cache_read = mg_ir_jint(j, "cache_read_input_tokens", u->cache_read);
    u->cache_write = mg_ir_jint(j, "cache_creation_input_tokens", u->cache_write);
}

static mg_ir_usage_t raw_usage_ir(const raw_usage_t *u)
{
    mg_ir_usage_t r = MG_IR_USAGE_UNKNOWN;
    if (u->input >= 0)
        r.input = u->input + (u->cache_read > 0 ? u->cache_read : 0) + (u->cache_write > 0 ? u->cache_write : 0);
    r.output = u->output;
    r.cache_read = u->cache_read;
    r.cache_write = u->cache_write;
    return r;
}

/* Fills an Anthropic usage object from the model's counters. with_input: also input and cache
 * fields (always in message_start and whole responses; in message_delta only when known). */
static void usage_fill(cJSON *j, const mg_ir_usage_t *u, bool with_input, bool with_output)
{
    int64_t cr = u->cache_read > 0 ? u->cache_read : 0, cw = u->cache_write > 0 ? u->cache_write : 0;
    if (with_input) {
        int64_t in = u->input >= 0 ? u->input - cr - cw : 0;
        mg_ir_add_int(j, "input_tokens", in > 0 ? in : 0);
    }
    if (with_output) mg_ir_add_int(j, "output_tokens", u->output > 0 ? u->output : 0);
    if (with_input) {
        mg_ir_add_int(j, "cache_creation_input_tokens", cw);
        mg_ir_add_int(j, "cache_read_input_tokens", cr);
    }
}

/* ---- requests: decode ---- */

static const char *const known_request_fields[] = {
    "model",       "max_tokens",     "messages",    "system", "stream",   "tools",
    "tool_choice", "stop_sequences", "temperature", "top_p",  "thinking", "metadata",
};

static void decode_image(mg_ir_arena_t *a, const cJSON *block, mg_ir_parts_t *pv)
{
    const cJSON *src = mg_ir_jget(block, "source");
    const char *st = mg_ir_jstr(src, "type");
    if (st && strcmp(st, "base64") == 0) {
        mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_IMAGE);
        p->media_type = mg_ir_jstr(src, "media_type");
        p->data = mg_codec_jtext(src, "data");
        p->cache_control = mg_ir_jget(block, "cache_control");
    } else if (st && strcmp(st, "url") == 0) {
        mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_IMAGE);
        p->url = mg_codec_jtext(src, "url");
        p->cache_control = mg_ir_jget(block, "cache_control");
    } else {
        mg_ir_parts_add(a, pv, MG_IR_PART_OPAQUE)->raw = block; /* file ids and the like */
    }
}

static const char *input_text(mg_ir_arena_t *a, const cJSON *input)
{
    return cJSON_IsObject(input) ? mg_codec_json_text(a, input) : "{}";
}

static int decode_blocks(mg_ir_arena_t *a, const cJSON *content, mg_ir_parts_t *pv,
                         mg_ir_parts_t *results, char *err, size_t errlen);

/* One block; ud is where tool_result blocks go (NULL: treated as opaque). */
static int decode_block(mg_ir_arena_t *a, const cJSON *b, const char *type, mg_ir_parts_t *pv, void *ud, char *err,
                        size_t errlen)
{
    mg_ir_parts_t *results = ud;
    if (strcmp(type, "text") == 0) {
        mg_codec_add_text(a, pv, b, "text")->cache_control = mg_ir_jget(b, "cache_control");
    } else if (strcmp(type, "image") == 0) {
        decode_image(a, b, pv);
    } else if (strcmp(type, "thinking") == 0) {
        mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_REASONING);
        p->text = mg_codec_jtext(b, "thinking");
        p->signature = mg_ir_jstr(b, "signature");
    } else if (strcmp(type, "redacted_thinking") == 0) {
        mg_ir_parts_add(a, pv, MG_IR_PART_REASONING)->redacted = mg_codec_jtext(b, "data");
    } else if (strcmp(type, "tool_use") == 0) {
        mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_TOOL_CALL);
        p->id = mg_ir_jstr(b, "id");
        p->name = mg_ir_jstr(b, "name");
        if (!p->id || !p->name) return mg_ir_fail(err, errlen, "a tool_use block needs an id and a name");
        p->arguments = input_text(a, mg_ir_jget(b, "input"));
        p->cache_control = mg_ir_jget(b, "cache_control");
    } else if (strcmp(type, "tool_result") == 0 && results) {
        mg_ir_part_t *p = mg_ir_parts_add(a, results, MG_IR_PART_TOOL_RESULT);
        p->id = mg_ir_jstr(b, "tool_use_id");
        if (!p->id) return mg_ir_fail(err, errlen, "a tool_result block needs tool_use_id");
        p->is_error = cJSON_IsTrue(mg_ir_jget(b, "is_error"));
        p->cache_control = mg_ir_jget(b, "cache_control");
        mg_ir_parts_t inner = {0};
        if (decode_blocks(a, mg_ir_jget(b, "content"), &inner, NULL, err, errlen)) return -1;
        p->parts = inner.v;
        p->n_parts = inner.n;
    } else {
        mg_ir_parts_add(a, pv, MG_IR_PART_OPAQUE)->raw = b; /* document, server tools, … */
    }
    return 0;
}

static const mg_codec_content_t block_rules = {decode_block, "content must be a string or an array of blocks",
                                               "a content block has no type", false};

/* Blocks of one message (or a tool_result's content) into parts. tool_result blocks go to
 * results (NULL: treated as opaque). */
static int decode_blocks(mg_ir_arena_t *a, const cJSON *content, mg_ir_parts_t *pv,
                         mg_ir_parts_t *results, char *err, size_t errlen)
{
    return mg_codec_decode_content(&block_rules, a, content, pv, results, err, errlen);
}

/* output_config: its effort (low, medium, high; max is high, the most the others have) and its
 * structured-output format ({type: "json_schema", schema}), for upstreams of other APIs. */
static void decode_output_config(const cJSON *oc, mg_ir_request_t *r)
{
    const char *eff = mg_ir_jstr(oc, "effort");
    if (eff && strcmp(eff, "low") == 0) r->output_effort = MG_IR_EFFORT_LOW;
    else if (eff && strcmp(eff, "medium") == 0) r->output_effort = MG_IR_EFFORT_MEDIUM;
    else if (eff && (strcmp(eff, "high") == 0 || strcmp(eff, "max") == 0)) r->output_effort = MG_IR_EFFORT_HIGH;
    const cJSON *fmt = mg_ir_jget(oc, "format");
    const char *type = mg_ir_jstr(fmt, "type");
    if (type && strcmp(type, "json_schema") == 0 && cJSON_IsObject(mg_ir_jget(fmt, "schema")))
        mg_codec_decode_format(r, type, fmt);
}

int mg_anthropic_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *r, char *err,
                                size_t errlen)
{
    if (!cJSON_IsObject(body)) return mg_ir_fail(err, errlen, "the request body must be a JSON object");
    mg_ir_request_init(a, r, API);
    r->model = mg_ir_jstr(body, "model");
    mg_ir_parts_t sys = {0};
    mg_ir_parts_t pv = {0};
    if (decode_blocks(a, mg_ir_jget(body, "system"), &pv, NULL, err, errlen)) return -1;
    mg_codec_add_texts(a, &sys, &pv);
    const cJSON *msgs = mg_ir_jget(body, "messages"), *m;
    if (!cJSON_IsArray(msgs)) return mg_ir_fail(err, errlen, "messages must be an array");
    size_t cap = 0;
    int i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = mg_ir_jstr(m, "role");
        if (!role) return mg_ir_fail(err, errlen, "messages[%d] has no role", i);
        mg_ir_parts_t parts = {0}, results = {0};
        bool user = strcmp(role, "user") == 0;
        if (decode_blocks(a, mg_ir_jget(m, "content"), &parts, user ? &results : NULL, err, errlen)) return -1;
        if (user) {
            /* Tool results first (Anthropic puts them first anyway), then the rest. */
            if (results.n) mg_ir_add_message(a, r, &cap, MG_IR_TOOL, &results);
            if (parts.n || !results.n) mg_ir_add_message(a, r, &cap, MG_IR_USER, &parts);
        } else if (strcmp(role, "assistant") == 0) {
            mg_ir_add_message(a, r, &cap, MG_IR_ASSISTANT, &parts);
        } else if (strcmp(role, "system") == 0) {
            mg_codec_add_texts(a, &sys, &parts);
        } else {
            return mg_ir_fail(err, errlen, "messages[%d]: unknown role \"%s\"", i, role);
        }
        i++;
    }
    r->system = sys.v;
    r->n_system = sys.n;

    const cJSON *tools = mg_ir_jget(body, "tools"), *t;
    if (cJSON_IsArray(tools)) {
        r->tools = mg_ir_alloc(a, (size_t)(cJSON_GetArraySize(tools) + 1) * sizeof *r->tools);
        cJSON_ArrayForEach(t, tools)
        {
            mg_ir_tool_t *o = &r->tools[r->n_tools++];
            o->strict = -1;
            const char *type = mg_ir_jstr(t, "type");
            if (type && strcmp(type, "custom") != 0) { /* server tools: web_search_…, bash_…, */
                o->raw = t;
                o->name = type;
                continue;
            }
            o->name = mg_ir_jstr(t, "name");
            if (!o->name) return mg_ir_fail(err, errlen, "a tool has no name");
            mg_codec_decode_tool(o, t, "input_schema");
            o->cache_control = mg_ir_jget(t, "cache_control");
        }
    }
    const cJSON *tc = mg_ir_jget(body, "tool_choice");
    const char *tct = mg_ir_jstr(tc, "type");
    if (tct) {
        if (strcmp(tct, "any") == 0) r->tool_choice = MG_IR_TOOL_CHOICE_REQUIRED;
        else if (strcmp(tct, "none") == 0) r->tool_choice = MG_IR_TOOL_CHOICE_NONE;
        else if (strcmp(tct, "tool") == 0 && mg_ir_jstr(tc, "name")) {
            r->tool_choice = MG_IR_TOOL_CHOICE_NAMED;
            r->tool_choice_name = mg_ir_jstr(tc, "name");
        } else r->tool_choice = MG_IR_TOOL_CHOICE_AUTO;
        if (cJSON_IsTrue(mg_ir_jget(tc, "disable_parallel_tool_use"))) r->parallel_tool_calls = 0;
    }
    r->max_output_tokens = mg_ir_jint(body, "max_tokens", -1);
    const cJSON *ss = mg_ir_jget(body, "stop_sequences");
    if (cJSON_IsArray(ss)) mg_codec_decode_stop(a, ss, r); /* an array only: no bare string here */
    mg_codec_decode_sampling(body, r);
    const cJSON *th = mg_ir_jget(body, "thinking");
    const char *tht = mg_ir_jstr(th, "type");
    if (tht) {
        if (strcmp(tht, "enabled") == 0) r->reasoning_budget = mg_ir_jint(th, "budget_tokens", 1024);
        else if (strcmp(tht, "adaptive") == 0) r->reasoning_adaptive = true;
        else if (strcmp(tht, "disabled") == 0) r->effort = MG_IR_EFFORT_NONE;
    }
    decode_output_config(mg_ir_jget(body, "output_config"), r);
    const cJSON *mcp = mg_ir_jget(body, "mcp_servers");
    if (cJSON_IsArray(mcp) && cJSON_GetArraySize(mcp) > 0) r->own_api_only = "mcp_servers";
    r->user = mg_ir_jstr(mg_ir_jget(body, "metadata"), "user_id");
    r->stream = cJSON_IsTrue(mg_ir_jget(body, "stream"));
    /* output_config stays an extra too: an Anthropic upstream gets it as it came */
    mg_codec_decode_extras(body, r, known_request_fields, MG_ARRAY_LEN(known_request_fields));
    return 0;
}

/* ---- requests: encode ---- */

static void add_cache_control(cJSON *o, const mg_ir_part_t *p)
{
    mg_ir_add_dup(o, "cache_control", p->cache_control);
}

static cJSON *text_block(const char *text, const mg_ir_part_t *p)
{
    cJSON *o = mg_codec_text_json("text", text);
    if (p) add_cache_control(o, p);
    return o;
}

static cJSON *image_block(const mg_ir_part_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "image");
    cJSON *src = cJSON_AddObjectToObject(o, "source");
    if (p->data) {
        cJSON_AddStringToObject(src, "type", "base64");
        cJSON_AddStringToObject(src, "media_type", p->media_type ? p->media_type : "image/png");
        cJSON_AddStringToObject(src, "data", p->data);
    } else {
        cJSON_AddStringToObject(src, "type", "url");
        cJSON_AddStringToObject(src, "url", p->url ? p->url : "");
    }
    add_cache_control(o, p);
    return o;
}

static cJSON *tool_use_input(const char *arguments)
{
    /* Arguments are JSON text in the model; Anthropic wants an object (B.5.4). Anything else
     * (empty, truncated, not an object) becomes {} as LiteLLM does. */
    cJSON *in = arguments ? mg_ir_parse_text(arguments, strlen(arguments)) : NULL;
    if (!cJSON_IsObject(in)) {
        cJSON_Delete(in);
        in = cJSON_CreateObject();
    }
    return in;
}

/* Adds key: a tool call id in the shape Anthropic accepts (mg_codec_anthropic_tool_id). */
static void add_tool_id(cJSON *o, const char *key, const char *id)
{
    char *s = mg_codec_anthropic_tool_id(id);
    cJSON_AddStringToObject(o, key, s);
    free(s);
}

static int message_blocks(const mg_ir_request_t *ir, const mg_ir_message_t *m, cJSON *blocks, char *err,
                          size_t errlen);

/* Whether a tool result's content must go as blocks: it holds an image, a part kept raw
 * (document, search_result: message_blocks lets those through for this API only) or a text with
 * cache_control, none of which a string can say. */
static bool result_as_blocks(const mg_ir_part_t *p)
{
    for (size_t i = 0; i < p->n_parts; i++) {
        const mg_ir_part_t *q = &p->parts[i];
        if (q->type == MG_IR_PART_IMAGE || q->type == MG_IR_PART_OPAQUE || q->cache_control) return true;
    }
    return false;
}

/* A tool_result block (caller owns it), its content a string of its texts unless it must be
 * blocks, which are written as a message's are. NULL with err when they cannot go to Anthropic. */
static cJSON *tool_result_block(const mg_ir_request_t *ir, const mg_ir_part_t *p, char *err, size_t errlen)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "tool_result");
    add_tool_id(o, "tool_use_id", p->id);
    if (result_as_blocks(p)) {
        mg_ir_message_t content = {.role = MG_IR_USER, .parts = p->parts, .n_parts = p->n_parts};
        if (message_blocks(ir, &content, cJSON_AddArrayToObject(o, "content"), err, errlen)) {
            cJSON_Delete(o);
            return NULL;
        }
    } else {
        mg_codec_add_joined(o, "content", p->parts, p->n_parts);
    }
    if (p->is_error) cJSON_AddBoolToObject(o, "is_error", true);
    add_cache_control(o, p);
    return o;
}

/* A tool_use block (requests and whole responses alike). */
static cJSON *tool_use_block(const mg_ir_part_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "tool_use");
    add_tool_id(o, "id", p->id);
    cJSON_AddStringToObject(o, "name", p->name ? p->name : "");
    cJSON_AddItemToObject(o, "input", tool_use_input(p->arguments));
    return o;
}

/* A redacted_thinking block, or a thinking block with its signature. */
static cJSON *thinking_block(const mg_ir_part_t *p)
{
    cJSON *o = cJSON_CreateObject();
    if (p->redacted) {
        cJSON_AddStringToObject(o, "type", "redacted_thinking");
        cJSON_AddStringToObject(o, "data", p->redacted);
    } else {
        cJSON_AddStringToObject(o, "type", "thinking");
        cJSON_AddStringToObject(o, "thinking", p->text ? p->text : "");
        cJSON_AddStringToObject(o, "signature", p->signature ? p->signature : "");
    }
    return o;
}

/* One model message into blocks (appended to blocks). */
static int message_blocks(const mg_ir_request_t *ir, const mg_ir_message_t *m, cJSON *blocks, char *err,
                          size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, API);
    for (size_t k = 0; k < m->n_parts; k++) {
        const mg_ir_part_t *p = &m->parts[k];
        switch (p->type) {
        case MG_IR_PART_TEXT:
            /* Anthropic rejects empty text blocks. */
            if (p->text && *p->text) cJSON_AddItemToArray(blocks, text_block(p->text, p));
            break;
        case MG_IR_PART_IMAGE: cJSON_AddItemToArray(blocks, image_block(p)); break;
        case MG_IR_PART_TOOL_CALL: {
            cJSON *o = tool_use_block(p);
            add_cache_control(o, p);
            cJSON_AddItemToArray(blocks, o);
            break;
        }
        case MG_IR_PART_TOOL_RESULT: {
            cJSON *o = tool_result_block(ir, p, err, errlen);
            if (!o) return -1;
            cJSON_AddItemToArray(blocks, o);
            break;
        }
        case MG_IR_PART_REASONING:
            /* Only thinking Anthropic signed can go back (B.5.5); other reasoning is dropped. */
            if (p->redacted || (p->signature && *p->signature)) cJSON_AddItemToArray(blocks, thinking_block(p));
            break;
        case MG_IR_PART_OPAQUE:
            if (!same) return mg_codec_opaque_fail(p, API, err, errlen);
            cJSON_AddItemToArray(blocks, cJSON_Duplicate(p->raw, true));
            break;
        }
    }
    return 0;
}

static bool is_tool_result(const cJSON *b)
{
    const char *t = mg_ir_jstr(b, "type");
    return t && strcmp(t, "tool_result") == 0;
}

/* tool_result blocks must open a user message: a stable partition, results first. */
static void results_first(cJSON *blocks)
{
    cJSON *results = cJSON_CreateArray(), *rest = cJSON_CreateArray();
    while (cJSON_GetArraySize(blocks) > 0) {
        cJSON *b = cJSON_DetachItemFromArray(blocks, 0);
        cJSON_AddItemToArray(is_tool_result(b) ? results : rest, b);
    }
    while (cJSON_GetArraySize(results) > 0)
        cJSON_AddItemToArray(blocks, cJSON_DetachItemFromArray(results, 0));
    while (cJSON_GetArraySize(rest) > 0)
        cJSON_AddItemToArray(blocks, cJSON_DetachItemFromArray(rest, 0));
    cJSON_Delete(results);
    cJSON_Delete(rest);
}

static cJSON *new_message(cJSON *msgs, const char *role)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "role", role);
    cJSON_AddArrayToObject(o, "content");
    cJSON_AddItemToArray(msgs, o);
    return o;
}

static int encode_messages(const mg_ir_request_t *ir, cJSON *msgs, char *err, size_t errlen)
{
    cJSON *last = NULL;
    const char *last_role = NULL;
    for (size_t i = 0; i < ir->n_messages; i++) {
        const mg_ir_message_t *m = &ir->messages[i];
        const char *role = m->role == MG_IR_ASSISTANT ? "assistant" : "user";
        cJSON *blocks = cJSON_CreateArray();
        if (message_blocks(ir, m, blocks, err, errlen)) {
            cJSON_Delete(blocks);
            return -1;
        }
        if (cJSON_GetArraySize(blocks) == 0) { /* nothing Anthropic accepts: skip the message */
            cJSON_Delete(blocks);
            continue;
        }
        if (!last || strcmp(last_role, role) != 0) {
            if (!last && strcmp(role, "user") != 0) {
                /* The first message must be a user one. */
                cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(new_message(msgs, "user"), "content"),
                                     text_block(".", NULL));
            }
            last = new_message(msgs, role);
            last_role = role;
        }
        cJSON *content = cJSON_GetObjectItemCaseSensitive(last, "content");
        while (cJSON_GetArraySize(blocks) > 0)
            cJSON_AddItemToArray(content, cJSON_DetachItemFromArray(blocks, 0));
        cJSON_Delete(blocks);
        if (strcmp(role, "user") == 0) results_first(content);
    }
    if (!last) cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(new_message(msgs, "user"), "content"),
                                    text_block(".", NULL));
    return 0;
}

/* Whether the encoded messages may go out with thinking on. Anthropic refuses thinking when the
 * last assistant message holds a tool_use and does not open with a thinking or redacted_thinking
 * block (400 "When `thinking` is enabled, a final `assistant` message must start with a thinking
 * block"), and only thinking Anthropic signed can be there (message_blocks drops the rest). That
 * is every tool loop of a Chat or Responses client, or one whose last turn another API answered:
 * such a request goes without thinking, as LiteLLM's modify_params does, rather than fail. An
 * Anthropic client's own tool turns open with their signed thinking and keep it. */
static bool thinking_allowed(const cJSON *msgs)
{
    const cJSON *last = NULL, *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = mg_ir_jstr(m, "role");
        if (role && strcmp(role, "assistant") == 0) last = m;
    }
    const cJSON *blocks = mg_ir_jget(last, "content"), *b;
    bool tool_use = false;
    cJSON_ArrayForEach(b, mg_ir_arr(blocks))
    {
        const char *t = mg_ir_jstr(b, "type");
        tool_use = tool_use || (t && strcmp(t, "tool_use") == 0);
    }
    if (!tool_use) return true;
    const char *first = mg_ir_jstr(cJSON_GetArrayItem(blocks, 0), "type");
    return first && (strcmp(first, "thinking") == 0 || strcmp(first, "redacted_thinking") == 0);
}

static cJSON *tool_json(const mg_ir_tool_t *t, bool same)
{
    cJSON *tj = cJSON_CreateObject();
    mg_codec_add_tool_fields(tj, t, "input_schema");
    /* Anthropic requires an object schema ("type":"object"), where OpenAI's APIs also take {}
     * or a schema without a type (a tool without parameters): such a schema gets the type. */
    cJSON *schema = cJSON_GetObjectItemCaseSensitive(tj, "input_schema");
    if (!same && !cJSON_HasObjectItem(schema, "type")) cJSON_AddStringToObject(schema, "type", "object");
    if (same && t->strict >= 0) cJSON_AddBoolToObject(tj, "strict", t->strict);
    mg_ir_add_dup(tj, "cache_control", t->cache_control);
    return tj;
}

cJSON *mg_anthropic_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                   char *err, size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, API);
    if (ir->n > 1) {
        mg_ir_fail(err, errlen, "n > 1 cannot be sent to %s", mg_api_name(API));
        return NULL;
    }
    if (ir->previous_response_id) {
        mg_ir_fail(err, errlen, "previous_response_id needs an openai-responses upstream");
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", opts && opts->model ? opts->model : ir->model ? ir->model : "");
    int64_t max_tokens = ir->max_output_tokens >= 0                  ? ir->max_output_tokens
                         : opts && opts->default_max_tokens > 0 ? opts->default_max_tokens
                                                                : 4096;
    if (max_tokens < 1) max_tokens = 1;
    mg_ir_add_int(o, "max_tokens", max_tokens);
    /* Empty text blocks are refused: decide on the parts that go out. One plain part is a string. */
    size_t n_sys = 0, last = 0;
    for (size_t i = 0; i < ir->n_system; i++)
        if (ir->system[i].text && *ir->system[i].text) n_sys++, last = i;
    if (n_sys) {
        if (n_sys == 1 && !ir->system[last].cache_control) {
            cJSON_AddStringToObject(o, "system", ir->system[last].text);
        } else {
            cJSON *sys = cJSON_AddArrayToObject(o, "system");
            for (size_t i = 0; i < ir->n_system; i++)
                if (ir->system[i].text && *ir->system[i].text)
                    cJSON_AddItemToArray(sys, text_block(ir->system[i].text, &ir->system[i]));
        }
    }
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    if (encode_messages(ir, msgs, err, errlen)) goto error;
    if (ir->n_tools) {
        if (mg_codec_encode_tools(o, ir, API, tool_json, err, errlen)) goto error;
        const char *type = NULL;
        switch (ir->tool_choice) {
        case MG_IR_TOOL_CHOICE_AUTO: type = "auto"; break;
        case MG_IR_TOOL_CHOICE_NONE: type = "none"; break;
        case MG_IR_TOOL_CHOICE_REQUIRED: type = "any"; break;
        case MG_IR_TOOL_CHOICE_NAMED: type = "tool"; break;
        case MG_IR_TOOL_CHOICE_UNSET: type = ir->parallel_tool_calls == 0 ? "auto" : NULL; break;
        }
        if (type) {
            cJSON *tc = cJSON_AddObjectToObject(o, "tool_choice");
            cJSON_AddStringToObject(tc, "type", type);
            if (ir->tool_choice == MG_IR_TOOL_CHOICE_NAMED) cJSON_AddStringToObject(tc, "name", ir->tool_choice_name);
            if (ir->parallel_tool_calls == 0 && ir->tool_choice != MG_IR_TOOL_CHOICE_NONE)
                cJSON_AddBoolToObject(tc, "disable_parallel_tool_use", true);
        }
    }
    if (ir->n_stop) mg_codec_add_strings(o, "stop_sequences", ir->stop, ir->n_stop);
    /* Thinking: a budget from the effort, at least 1024 and below max_tokens (Anthropic's rules);
     * with max_tokens too small to think in, or a last tool turn that cannot open with signed
     * thinking (thinking_allowed), no thinking, and the sampling rules of no thinking below. */
    bool thinking = false;
    /* Anthropic refuses thinking beside a forced tool choice (any, or a named tool): a request
     * from another API that asks for both goes without thinking. An Anthropic client's own
     * request is sent as it asked. */
    bool forced = ir->n_tools && (ir->tool_choice == MG_IR_TOOL_CHOICE_REQUIRED ||
                                  ir->tool_choice == MG_IR_TOOL_CHOICE_NAMED);
    bool may_think = thinking_allowed(msgs) && (same || !forced);
    mg_ir_effort_t eff = mg_ir_request_effort(ir);
    if (same && ir->reasoning_adaptive) {
        if (may_think) {
            cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "thinking"), "type", "adaptive");
            thinking = true;
        }
    } else if (eff == MG_IR_EFFORT_NONE) {
        if (same) cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "thinking"), "type", "disabled");
    } else if (eff != MG_IR_EFFORT_UNSET && may_think) {
        int64_t budget = ir->reasoning_budget >= 0 ? ir->reasoning_budget : mg_ir_effort_budget(eff);
        if (budget < 1024) budget = 1024;
        if (budget >= max_tokens) budget = max_tokens - 1;
        if (budget >= 1024) {
            cJSON *th = cJSON_AddObjectToObject(o, "thinking");
            cJSON_AddStringToObject(th, "type", "enabled");
            mg_ir_add_int(th, "budget_tokens", budget);
            thinking = true;
        }
    }
    if (ir->has_temperature) {
        double t = ir->temperature > 1.0 ? 1.0 : ir->temperature < 0 ? 0 : ir->temperature; /* OpenAI allows 0–2 */
        if (!thinking || t == 1.0) cJSON_AddNumberToObject(o, "temperature", t);
    }
    if (ir->has_top_p && (!thinking || ir->top_p >= 0.95)) cJSON_AddNumberToObject(o, "top_p", ir->top_p);
    if (ir->user) cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "metadata"), "user_id", ir->user);
    if (ir->stream) cJSON_AddBoolToObject(o, "stream", true);
    if (same) mg_ir_copy_extras(o, ir);
    return o;
error:
    cJSON_Delete(o);
    return NULL;
}

/* ---- whole responses ---- */

int mg_anthropic_decode_response(const cJSON *body, mg_ir_arena_t *a, const mg_ir_decode_opts_t *opts,
                                 mg_ir_response_t *out, char *err, size_t errlen)
{
    (void)opts;
    memset(out, 0, sizeof *out);
    out->usage = MG_IR_USAGE_UNKNOWN;
    mg_ir_error_t e;
    if (mg_ir_error_from_json(body, 0, &e)) return mg_ir_fail(err, errlen, "upstream error: %s", e.message);
    const cJSON *content = mg_ir_jget(body, "content");
    if (!cJSON_IsArray(content)) return mg_ir_fail(err, errlen, "the answer has no content array");
    out->id = mg_ir_jstr(body, "id");
    out->model = mg_ir_jstr(body, "model");
    mg_ir_parts_t pv = {0};
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const char *type = mg_ir_jstr(b, "type");
        if (!type) continue;
        if (strcmp(type, "text") == 0) {
            mg_codec_add_text(a, &pv, b, "text");
        } else if (strcmp(type, "thinking") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING);
            p->text = mg_codec_jtext(b, "thinking");
            p->signature = mg_ir_jstr(b, "signature");
        } else if (strcmp(type, "redacted_thinking") == 0) {
            mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING)->redacted = mg_codec_jtext(b, "data");
        } else if (strcmp(type, "tool_use") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_CALL);
            p->id = mg_codec_jtext(b, "id");
            if (!*p->id) { /* a compatible server that sent none: one that no other call has */
                char *made = mg_codec_new_call_id("toolu_");
                p->id = mg_ir_strdup(a, made);
                free(made);
            }
            p->name = mg_codec_jtext(b, "name");
            p->arguments = input_text(a, mg_ir_jget(b, "input"));
        }
        /* server tool blocks and the like have no place in the other APIs */
    }
    out->parts = pv.v;
    out->n_parts = pv.n;
    out->finish = mg_anthropic_parse_stop_reason(mg_ir_jstr(body, "stop_reason"));
    out->stop_sequence = mg_ir_jstr(body, "stop_sequence");
    const cJSON *u = mg_ir_jget(body, "usage");
    if (cJSON_IsObject(u)) {
        raw_usage_t ru = {-1, -1, -1, -1};
        raw_usage_update(&ru, u);
        out->usage = raw_usage_ir(&ru);
    }
    return 0;
}

cJSON *mg_anthropic_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts)
{
    cJSON *o = cJSON_CreateObject();
    char *id = mg_codec_answer_id(opts->keep_upstream_id ? "" : "msg_", opts->id, r->id, "msg_moongate");
    cJSON_AddStringToObject(o, "id", id);
    free(id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    cJSON_AddStringToObject(o, "model", mg_ir_model_shown(opts, r->model));
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    bool tools = false;
    for (size_t i = 0; i < r->n_parts; i++) {
        const mg_ir_part_t *p = &r->parts[i];
        if (p->type == MG_IR_PART_REASONING) {
            if (!opts->strip_reasoning) cJSON_AddItemToArray(content, thinking_block(p));
        } else if (p->type == MG_IR_PART_TEXT) {
            /* A refusal too: Anthropic has no refusal block; its own refusals are text (with
             * stop_reason "refusal" when a classifier stopped the answer). */
            if (p->text && *p->text) cJSON_AddItemToArray(content, text_block(p->text, NULL));
        } else if (p->type == MG_IR_PART_TOOL_CALL) {
            cJSON_AddItemToArray(content, tool_use_block(p));
            tools = true;
        }
    }
    mg_ir_finish_t f = mg_ir_effective_finish(r->finish, tools);
    cJSON_AddStringToObject(o, "stop_reason", mg_anthropic_stop_reason(f));
    if (f == MG_IR_FINISH_STOP_SEQUENCE && r->stop_sequence) cJSON_AddStringToObject(o, "stop_sequence", r->stop_sequence);
    else cJSON_AddNullToObject(o, "stop_sequence");
    usage_fill(cJSON_AddObjectToObject(o, "usage"), &r->usage, true, true);
    return o;
}

char *mg_anthropic_encode_error(int status, const char *type, const char *code, const char *message)
{
    (void)code;
    mg_buf_t b = {0};
    mg_buf_puts(&b, "{\"type\":\"error\",\"error\":{\"type\":");
    mg_buf_json_str(&b, mg_ir_error_type(API, status, type));
    mg_buf_puts(&b, ",\"message\":");
    mg_buf_json_str(&b, message ? message : "error");
    mg_buf_puts(&b, "}}");
    return mg_buf_steal(&b);
}

/* ---- stream decoder ---- */

enum { BLK_OTHER, BLK_TEXT, BLK_THINKING, BLK_TOOL };
#define MAX_BLOCKS 4096 /* a content-block index past this is ignored (fuzzed input) */

typedef struct ant_dec {
    bool started, have_stop, ended;
    raw_usage_t usage;
    uint8_t *kinds; /* by content-block index */
    int *tool_of;   /* by content-block index: the tool-call ordinal */
    int cap;
    int n_tools;
} ant_dec_t;

void *mg_anthropic_decoder_new(const mg_ir_decode_opts_t *opts)
{
    (void)opts;
    ant_dec_t *d = mg_xcalloc(1, sizeof *d);
    d->usage = (raw_usage_t){-1, -1, -1, -1};
    return d;
}

void mg_anthropic_decoder_free(void *st)
{
    ant_dec_t *d = st;
    if (!d) return;
    free(d->kinds);
    free(d->tool_of);
    free(d);
}

static int block_kind(const ant_dec_t *d, int64_t index)
{
    return index >= 0 && index < d->cap ? d->kinds[index] : BLK_OTHER;
}

static void set_block(ant_dec_t *d, int64_t index, int kind, int tool)
{
    if (index < 0 || index >= MAX_BLOCKS) return;
    if (index >= d->cap) {
        int ncap = d->cap ? d->cap : 8;
        while (ncap <= index)
            ncap *= 2;
        d->kinds = mg_xrealloc(d->kinds, (size_t)ncap);
        d->tool_of = mg_xrealloc(d->tool_of, (size_t)ncap * sizeof *d->tool_of);
        memset(d->kinds + d->cap, BLK_OTHER, (size_t)(ncap - d->cap));
        d->cap = ncap;
    }
    d->kinds[index] = (uint8_t)kind;
    d->tool_of[index] = tool;
}

static int on_block_start(ant_dec_t *d, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    int64_t index = mg_ir_jint(j, "index", -1);
    const cJSON *b = mg_ir_jget(j, "content_block");
    const char *type = mg_ir_jstr(b, "type");
    if (!type) return 0;
    if (strcmp(type, "text") == 0) {
        set_block(d, index, BLK_TEXT, -1);
        return mg_codec_emit_text(MG_IR_EV_TEXT_DELTA, mg_ir_jstr(b, "text"), 0, cb, ud);
    }
    if (strcmp(type, "thinking") == 0) {
        set_block(d, index, BLK_THINKING, -1);
        int rc = mg_codec_emit_text(MG_IR_EV_REASONING_DELTA, mg_ir_jstr(b, "thinking"), 0, cb, ud);
        return rc ? rc : mg_codec_emit_text(MG_IR_EV_REASONING_SIGNATURE, mg_ir_jstr(b, "signature"), 0, cb, ud);
    }
    if (strcmp(type, "tool_use") == 0) {
        int tool = d->n_tools++;
        set_block(d, index, BLK_TOOL, tool);
        const char *id = mg_ir_jstr(b, "id");
        char *made = id && *id ? NULL : mg_codec_new_call_id("toolu_"); /* a server that sent none */
        mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_START, .index = tool, .id = made ? made : id,
                            .name = mg_codec_jtext(b, "name")};
        int rc_start = cb(ud, &ev);
        free(made);
        if (rc_start) return rc_start;
        /* Some compatible servers put the whole input here instead of streaming it. */
        const cJSON *input = mg_ir_jget(b, "input");
        if (cJSON_IsObject(input) && input->child) {
            char *s = cJSON_PrintUnformatted(input);
            if (!s) abort();
            mg_ir_event_t dv = {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = tool, .text = s, .text_len = strlen(s)};
            int rc = cb(ud, &dv);
            cJSON_free(s);
            return rc;
        }
        return 0;
    }
    /* redacted_thinking, server tools and their results: no place elsewhere, but the answer has
     * begun (a web search's results can be megabytes before the first text). */
    set_block(d, index, BLK_OTHER, -1);
    mg_ir_event_t ev = {.type = MG_IR_EV_OPAQUE_BLOCK};
    return cb(ud, &ev);
}

static int on_block_delta(ant_dec_t *d, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    int64_t index = mg_ir_jint(j, "index", -1);
    int kind = block_kind(d, index);
    const cJSON *delta = mg_ir_jget(j, "delta");
    const char *type = mg_ir_jstr(delta, "type");
    if (!type || kind == BLK_OTHER) return 0;
    if (strcmp(type, "text_delta") == 0 && kind == BLK_TEXT)
        return mg_codec_emit_text(MG_IR_EV_TEXT_DELTA, mg_ir_jstr(delta, "text"), 0, cb, ud);
    if (strcmp(type, "thinking_delta") == 0 && kind == BLK_THINKING)
        return mg_codec_emit_text(MG_IR_EV_REASONING_DELTA, mg_ir_jstr(delta, "thinking"), 0, cb, ud);
    if (strcmp(type, "signature_delta") == 0 && kind == BLK_THINKING)
        return mg_codec_emit_text(MG_IR_EV_REASONING_SIGNATURE, mg_ir_jstr(delta, "signature"), 0, cb, ud);
    if (strcmp(type, "input_json_delta") == 0 && kind == BLK_TOOL)
        return mg_codec_emit_text(MG_IR_EV_TOOL_CALL_DELTA, mg_ir_jstr(delta, "partial_json"), d->tool_of[index], cb, ud);
    return 0; /* citations_delta and future kinds */
}

static int dec_event(ant_dec_t *d, const char *type, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    if (strcmp(type, "message_start") == 0) {
        if (d->started) return 0;
        d->started = true;
        const cJSON *m = mg_ir_jget(j, "message");
        raw_usage_update(&d->usage, mg_ir_jget(m, "usage"));
        mg_ir_event_t ev = {.type = MG_IR_EV_START, .id = mg_ir_jstr(m, "id"), .model = mg_ir_jstr(m, "model"),
                            .usage = raw_usage_ir(&d->usage)};
        return cb(ud, &ev);
    }
    if (!d->started) {
        /* A server that skipped message_start: the model still needs a START first. */
        d->started = true;
        mg_ir_event_t ev = {.type = MG_IR_EV_START, .usage = MG_IR_USAGE_UNKNOWN};
        MG_CODEC_EMIT(ev);
    }
    if (strcmp(type, "content_block_start") == 0) return on_block_start(d, j, cb, ud);
    if (strcmp(type, "content_block_delta") == 0) return on_block_delta(d, j, cb, ud);
    if (strcmp(type, "content_block_stop") == 0) {
        if (block_kind(d, mg_ir_jint(j, "index", -1)) == BLK_OTHER) return 0;
        mg_ir_event_t ev = {.type = MG_IR_EV_BLOCK_END};
        return cb(ud, &ev);
    }
    if (strcmp(type, "message_delta") == 0) {
        const cJSON *u = mg_ir_jget(j, "usage");
        if (cJSON_IsObject(u)) {
            raw_usage_update(&d->usage, u);
            mg_ir_event_t ev = {.type = MG_IR_EV_USAGE, .usage = raw_usage_ir(&d->usage)};
            MG_CODEC_EMIT(ev);
        }
        const cJSON *delta = mg_ir_jget(j, "delta");
        const char *sr = mg_ir_jstr(delta, "stop_reason");
        if (sr && !d->have_stop) { /* the first stop reason counts */
            d->have_stop = true;
            mg_ir_event_t ev = {.type = MG_IR_EV_FINISH, .finish = mg_anthropic_parse_stop_reason(sr),
                                .stop_sequence = mg_ir_jstr(delta, "stop_sequence")};
            MG_CODEC_EMIT(ev);
        }
        return 0;
    }
    if (strcmp(type, "message_stop") == 0) return mg_codec_emit_end(&d->ended, cb, ud);
    return 0; /* ping and future events */
}

int mg_anthropic_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                              size_t data_len, mg_ir_event_cb cb, void *ud)
{
    ant_dec_t *d = st;
    if (d->ended) return 0;
    cJSON *j = mg_ir_parse_text(data, data_len);
    /* The payload's own "type" names the event; the `event:` line is the fallback. */
    char tbuf[64];
    const char *t = mg_ir_event_type(j, type, type_len, tbuf, sizeof tbuf);
    int rc = 0;
    if (strcmp(t, "error") == 0) {
        mg_ir_error_t e;
        if (j && mg_ir_error_from_json(j, 0, &e)) rc = mg_codec_emit_error(&d->ended, &e, cb, ud);
        else rc = mg_codec_emit_raw_error(&d->ended, "api_error", data, data_len, cb, ud);
    } else if (j) {
        rc = dec_event(d, t, j, cb, ud);
    }
    cJSON_Delete(j);
    return rc;
}

int mg_anthropic_decoder_finish(void *st, mg_ir_event_cb cb, void *ud)
{
    ant_dec_t *d = st;
    if (d->ended) return 0;
    if (d->have_stop) return mg_codec_emit_end(&d->ended, cb, ud);
    return mg_codec_emit_truncated(&d->ended, "api_error", cb, ud);
}

/* ---- stream encoder ---- */

typedef struct ant_enc {
    char *id, *model, *default_model;
    bool keep_id; /* mg_ir_output_opts_t.keep_upstream_id */
    bool strip;
    bool started, done, any_tool;
    int open;       /* BLK_OTHER (= none open), BLK_TEXT, BLK_THINKING, BLK_TOOL */
    int open_tool;  /* the tool-call ordinal of an open tool_use block */
    int next_index; /* the next content-block index */
    mg_ir_finish_t finish;
    char *stop_sequence;
    mg_ir_usage_t usage;
    mg_buf_t scratch;
} ant_enc_t;

void *mg_anthropic_encoder_new(const mg_ir_output_opts_t *opts)
{
    ant_enc_t *e = mg_xcalloc(1, sizeof *e);
    e->id = opts->id ? mg_xstrdup(opts->id) : NULL;
    e->keep_id = opts->keep_upstream_id;
    e->model = opts->model ? mg_xstrdup(opts->model) : NULL;
    e->default_model = opts->default_model ? mg_xstrdup(opts->default_model) : NULL;
    e->strip = opts->strip_reasoning;
    e->usage = MG_IR_USAGE_UNKNOWN;
    e->open_tool = -1;
    return e;
}

void mg_anthropic_encoder_free(void *st)
{
    ant_enc_t *e = st;
    if (!e) return;
    free(e->id);
    free(e->model);
    free(e->default_model);
    free(e->stop_sequence);
    mg_buf_free(&e->scratch);
    free(e);
}

bool mg_anthropic_encoder_done(const void *st)
{
    return ((const ant_enc_t *)st)->done;
}

static void enc_start(ant_enc_t *e, const mg_ir_event_t *ev, mg_buf_t *out)
{
    if (e->started) return;
    e->started = true;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", "message_start");
    cJSON *m = cJSON_AddObjectToObject(j, "message");
    char *id = mg_codec_answer_id(e->keep_id ? "" : "msg_", e->id, ev ? ev->id : NULL, "msg_moongate");
    cJSON_AddStringToObject(m, "id", id);
    free(id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    mg_ir_output_opts_t mo = {.model = e->model, .default_model = e->default_model};
    cJSON_AddStringToObject(m, "model", mg_ir_model_shown(&mo, ev ? ev->model : NULL));
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    mg_ir_usage_t u = ev ? ev->usage : MG_IR_USAGE_UNKNOWN;
    usage_fill(cJSON_AddObjectToObject(m, "usage"), &u, true, true);
    mg_ir_sse_json(out, "message_start", j);
    cJSON_Delete(j);
}

static void close_block(ant_enc_t *e, mg_buf_t *out)
{
    if (e->open == BLK_OTHER) return;
    mg_buf_reset(&e->scratch);
    mg_buf_printf(&e->scratch, "{\"type\":\"content_block_stop\",\"index\":%d}", e->next_index - 1);
    mg_ir_sse_frame(out, "content_block_stop", e->scratch.data, e->scratch.len);
    e->open = BLK_OTHER;
    e->open_tool = -1;
}

/* Opens a block of kind unless one is open; content_block is its start JSON. */
static void open_block(ant_enc_t *e, int kind, const char *content_block, mg_buf_t *out)
{
    close_block(e, out);
    mg_buf_reset(&e->scratch);
    mg_buf_printf(&e->scratch, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":%s}",
                  e->next_index++, content_block);
    mg_ir_sse_frame(out, "content_block_start", e->scratch.data, e->scratch.len);
    e->open = kind;
}

static void block_delta(ant_enc_t *e, const char *delta_type, const char *field, const char *s,
                        size_t n, mg_buf_t *out)
{
    mg_buf_reset(&e->scratch);
    mg_buf_puts(&e->scratch, "{\"type\":\"content_block_delta\",\"index\":");
    mg_ir_buf_int(&e->scratch, e->next_index - 1);
    mg_buf_puts(&e->scratch, ",\"delta\":{\"type\":\"");
    mg_buf_puts(&e->scratch, delta_type);
    mg_buf_puts(&e->scratch, "\",\"");
    mg_buf_puts(&e->scratch, field);
    mg_buf_puts(&e->scratch, "\":");
    mg_buf_json_strn(&e->scratch, s, n);
    mg_buf_puts(&e->scratch, "}}");
    mg_ir_sse_frame(out, "content_block_delta", e->scratch.data, e->scratch.len);
}

void mg_anthropic_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out)
{
    ant_enc_t *e = st;
    if (e->done) return;
    switch (ev->type) {
    case MG_IR_EV_START: enc_start(e, ev, out); break;
    case MG_IR_EV_REASONING_DELTA:
        if (e->strip || !ev->text_len) break;
        enc_start(e, NULL, out);
        if (e->open != BLK_THINKING)
            open_block(e, BLK_THINKING, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}", out);
        block_delta(e, "thinking_delta", "thinking", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_REASONING_SIGNATURE:
        if (e->strip || !ev->text_len || e->open != BLK_THINKING) break;
        block_delta(e, "signature_delta", "signature", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_TEXT_DELTA: /* refusals too, as text (mg_anthropic_encode_response) */
        if (!ev->text_len) break;
        enc_start(e, NULL, out);
        if (e->open != BLK_TEXT) open_block(e, BLK_TEXT, "{\"type\":\"text\",\"text\":\"\"}", out);
        block_delta(e, "text_delta", "text", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_TOOL_CALL_START: {
        enc_start(e, NULL, out);
        mg_buf_t cbj = {0};
        mg_buf_puts(&cbj, "{\"type\":\"tool_use\",\"id\":");
        char *id = mg_codec_anthropic_tool_id(ev->id); /* as whole answers and requests write it */
        mg_buf_json_str(&cbj, id);
        free(id);
        mg_buf_puts(&cbj, ",\"name\":");
        mg_buf_json_str(&cbj, ev->name ? ev->name : "");
        mg_buf_puts(&cbj, ",\"input\":{}}");
        open_block(e, BLK_TOOL, cbj.data, out);
        mg_buf_free(&cbj);
        e->open_tool = ev->index;
        e->any_tool = true;
        break;
    }
    case MG_IR_EV_TOOL_CALL_DELTA:
        /* Anthropic cannot reopen a closed block: fragments of any other call are dropped. */
        if (!ev->text_len || e->open != BLK_TOOL || e->open_tool != ev->index) break;
        block_delta(e, "input_json_delta", "partial_json", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_BLOCK_END: close_block(e, out); break;
    case MG_IR_EV_OPAQUE_BLOCK: break; /* its bytes go only where the stream passes through */
    case MG_IR_EV_FINISH:
        close_block(e, out);
        if (e->finish == MG_IR_FINISH_NONE) {
            e->finish = ev->finish;
            e->stop_sequence = ev->stop_sequence ? mg_xstrdup(ev->stop_sequence) : NULL;
        }
        break;
    case MG_IR_EV_USAGE: e->usage = ev->usage; break;
    case MG_IR_EV_END: {
        enc_start(e, NULL, out);
        close_block(e, out);
        /* B.5.1: the stop reason waits for the usage so one message_delta carries both; the SDK
         * needs usage.output_tokens there. */
        mg_ir_finish_t f = mg_ir_effective_finish(e->finish, e->any_tool);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "type", "message_delta");
        cJSON *d = cJSON_AddObjectToObject(j, "delta");
        cJSON_AddStringToObject(d, "stop_reason", mg_anthropic_stop_reason(f));
        if (f == MG_IR_FINISH_STOP_SEQUENCE && e->stop_sequence) cJSON_AddStringToObject(d, "stop_sequence", e->stop_sequence);
        else cJSON_AddNullToObject(d, "stop_sequence");
        usage_fill(cJSON_AddObjectToObject(j, "usage"), &e->usage, e->usage.input >= 0, true);
        mg_ir_sse_json(out, "message_delta", j);
        cJSON_Delete(j);
        mg_ir_sse_frame(out, "message_stop", "{\"type\":\"message_stop\"}", 23);
        e->done = true;
        break;
    }
    case MG_IR_EV_ERROR:
        mg_codec_error_frame(out, "error", &ev->error, mg_anthropic_encode_error);
        e->done = true;
        break;
    }
}

const mg_ir_codec_t mg_anthropic_codec = {
    .api = API,
    .name = "anthropic-messages",
    .decode_request = mg_anthropic_decode_request,
    .encode_request = mg_anthropic_encode_request,
    .decode_response = mg_anthropic_decode_response,
    .encode_response = mg_anthropic_encode_response,
    .encode_error = mg_anthropic_encode_error,
    .decoder_new = mg_anthropic_decoder_new,
    .decoder_feed = mg_anthropic_decoder_feed,
    .decoder_finish = mg_anthropic_decoder_finish,
    .decoder_free = mg_anthropic_decoder_free,
    .encoder_new = mg_anthropic_encoder_new,
    .encoder_push = mg_anthropic_encoder_push,
    .encoder_done = mg_anthropic_encoder_done,
    .encoder_free = mg_anthropic_encoder_free,
};
