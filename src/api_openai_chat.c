/* OpenAI Chat Completions codec. See api_openai_chat.h; the wire facts are PROTOCOLS.md A.1, A.6
 * and the translation notes B.1–B.5. */
#include "api_openai_chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_util.h"

#define API MG_API_OPENAI_COMPLETIONS

/* ---- finish reasons and usage ---- */

const char *mg_openai_chat_finish_reason(mg_ir_finish_t f)
{
    switch (f) {
    case MG_IR_FINISH_LENGTH:
    case MG_IR_FINISH_CONTEXT_WINDOW: return "length";
    case MG_IR_FINISH_TOOL_CALLS: return "tool_calls";
    case MG_IR_FINISH_CONTENT_FILTER: return "content_filter";
    default: return "stop"; /* stop, stop_sequence, pause_turn (as Portkey maps it) */
    }
}

mg_ir_finish_t mg_openai_chat_parse_finish(const char *s)
{
    if (!s) return MG_IR_FINISH_NONE;
    /* "max_tokens": some compatible (local) servers word the length stop as Anthropic does. */
    if (strcmp(s, "length") == 0 || strcmp(s, "max_tokens") == 0) return MG_IR_FINISH_LENGTH;
    if (strcmp(s, "tool_calls") == 0 || strcmp(s, "function_call") == 0) return MG_IR_FINISH_TOOL_CALLS;
    if (strcmp(s, "content_filter") == 0) return MG_IR_FINISH_CONTENT_FILTER;
    return MG_IR_FINISH_STOP;
}

static mg_ir_usage_t usage_from_json(const cJSON *u)
{
    mg_ir_usage_t r = MG_IR_USAGE_UNKNOWN;
    r.input = mg_ir_jint(u, "prompt_tokens", -1);
    r.output = mg_ir_jint(u, "completion_tokens", -1);
    const cJSON *pd = mg_ir_jget(u, "prompt_tokens_details");
    r.cache_read = mg_ir_jint(pd, "cached_tokens", -1);
    r.reasoning = mg_ir_jint(mg_ir_jget(u, "completion_tokens_details"), "reasoning_tokens", -1);
    /* Cache writes, both inside prompt_tokens: OpenRouter's prompt_tokens_details member, or
     * LiteLLM's top-level one. */
    r.cache_write = mg_ir_jint(pd, "cache_write_tokens", mg_ir_jint(u, "cache_creation_input_tokens", -1));
    return r;
}

static cJSON *usage_to_json(const mg_ir_usage_t *u)
{
    int64_t in = u->input > 0 ? u->input : 0, out = u->output > 0 ? u->output : 0;
    cJSON *j = cJSON_CreateObject();
    mg_ir_add_int(j, "prompt_tokens", in);
    mg_ir_add_int(j, "completion_tokens", out);
    mg_ir_add_int(j, "total_tokens", in + out);
    if (u->cache_read >= 0) {
        cJSON *d = cJSON_AddObjectToObject(j, "prompt_tokens_details");
        mg_ir_add_int(d, "cached_tokens", u->cache_read);
    }
    if (u->reasoning >= 0) {
        cJSON *d = cJSON_AddObjectToObject(j, "completion_tokens_details");
        mg_ir_add_int(d, "reasoning_tokens", u->reasoning);
    }
    return j;
}

static bool usage_known(const mg_ir_usage_t *u)
{
    return u->input >= 0 || u->output >= 0;
}

/* ---- <think>…</think> in content ----
 * Some local models (DeepSeek-R1 and Qwen3 distills behind servers that do not separate
 * reasoning) write their reasoning into content between <think> and </think>. Only a <think>
 * that opens the content (after whitespace) counts, so an answer that merely mentions the tag is
 * left alone; a tag cut across deltas is held back until it is whole. */

enum { THINK_PRE, THINK_IN, THINK_POST, THINK_TEXT, THINK_OFF };

typedef struct think {
    int mode;
    bool trim; /* just after <think>: the blank lines there are not reasoning */
    mg_buf_t hold;
} think_t;

static size_t skip_ws(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        i++;
    return i;
}

/* Splits n bytes of content into reasoning (appended to r) and text (appended to t). The
 * reasoning of one call always precedes its text. */
static void think_feed(think_t *th, const char *p, size_t n, mg_buf_t *r, mg_buf_t *t)
{
    static const char open_tag[] = "<think>", close_tag[] = "</think>";
    mg_buf_t work = {0};
    for (;;) {
        switch (th->mode) {
        case THINK_OFF:
        case THINK_TEXT: mg_buf_append(t, p, n); goto out;
        case THINK_PRE: {
            mg_buf_append(&th->hold, p, n);
            size_t ws = skip_ws(th->hold.data, th->hold.len);
            const char *s = th->hold.data + ws;
            size_t k = th->hold.len - ws;
            if (k >= 7 && memcmp(s, open_tag, 7) == 0) {
                th->mode = THINK_IN;
                th->trim = true;
                mg_buf_reset(&work);
                mg_buf_append(&work, s + 7, k - 7);
                mg_buf_reset(&th->hold);
                p = work.data ? work.data : "";
                n = work.len;
                continue;
            }
            /* Maybe a tag: wait (for a bounded run of leading blanks). */
            if (k < 7 && ws <= 256 && memcmp(s, open_tag, k) == 0) goto out;
            th->mode = THINK_TEXT;
            mg_buf_append(t, th->hold.data, th->hold.len);
            mg_buf_reset(&th->hold);
            goto out;
        }
        case THINK_IN: {
            mg_buf_t cat = {0};
            mg_buf_append(&cat, th->hold.data ? th->hold.data : "", th->hold.len);
            mg_buf_append(&cat, p, n);
            mg_buf_reset(&th->hold);
            const char *s = cat.data ? cat.data : "";
            size_t len = cat.len, i;
            if (th->trim) {
                size_t ws = skip_ws(s, len);
                s += ws;
                len -= ws;
                th->trim = len == 0;
            }
            for (i = 0; i + 8 <= len; i++)
                if (memcmp(s + i, close_tag, 8) == 0) break;
            if (i + 8 <= len) {
                mg_buf_append(r, s, i);
                th->mode = THINK_POST;
                mg_buf_reset(&work);
                mg_buf_append(&work, s + i + 8, len - i - 8);
                mg_buf_free(&cat);
                p = work.data ? work.data : "";
                n = work.len;
                continue;
            }
            /* Keep the longest tail that could be the start of "</think>". */
            size_t keep = len < 7 ? len : 7;
            while (keep && memcmp(s + len - keep, close_tag, keep) != 0)
                keep--;
            mg_buf_append(r, s, len - keep);
            mg_buf_append(&th->hold, s + len - keep, keep);
            mg_buf_free(&cat);
            goto out;
        }
        case THINK_POST: {
            size_t ws = skip_ws(p, n); /* the blank lines after </think> are not the answer */
            if (ws < n) {
                th->mode = THINK_TEXT;
                mg_buf_append(t, p + ws, n - ws);
            }
            goto out;
        }
        }
    }
out:
    mg_buf_free(&work);
}

/* End of content: whatever was held back goes out as what it was. */
static void think_flush(think_t *th, mg_buf_t *r, mg_buf_t *t)
{
    if (th->hold.len) {
        if (th->mode == THINK_IN) mg_buf_append(r, th->hold.data, th->hold.len);
        else mg_buf_append(t, th->hold.data, th->hold.len);
    }
    mg_buf_reset(&th->hold);
    if (th->mode == THINK_PRE) th->mode = THINK_TEXT;
}

/* ---- requests: decode ---- */

static const char *const known_request_fields[] = {
    "model",       "messages",    "stream",     "stream_options",      "max_tokens",
    "max_completion_tokens",      "stop",       "temperature",         "top_p",
    "tools",       "tool_choice", "parallel_tool_calls",               "reasoning_effort",
    "user",        "response_format",           "n",
};

static const char *args_text(mg_ir_arena_t *a, const cJSON *v)
{
    if (cJSON_IsString(v)) return *v->valuestring ? v->valuestring : "{}";
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) return mg_codec_json_text(a, v);
    return "{}";
}

/* Servers name the reasoning field differently (A.1, A.6): accept both, never both. */
static const char *reasoning_field(const cJSON *o)
{
    const char *rs = mg_ir_jstr(o, "reasoning_content");
    if (!rs || !*rs) rs = mg_ir_jstr(o, "reasoning");
    return rs;
}

/* One part of a content array. */
static int decode_part(mg_ir_arena_t *a, const cJSON *item, const char *type, mg_ir_parts_t *pv, void *ud,
                       char *err, size_t errlen)
{
    if (strcmp(type, "text") == 0 || strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0) {
        /* vLLM renders the Responses spellings as text too: the filters must see them */
        mg_codec_add_text(a, pv, item, "text");
    } else if (strcmp(type, "refusal") == 0) {
        mg_codec_add_text(a, pv, item, "refusal");
    } else if (strcmp(type, "image_url") == 0) {
        const cJSON *iu = mg_ir_jget(item, "image_url");
        const char *url = cJSON_IsString(iu) ? iu->valuestring : mg_ir_jstr(iu, "url");
        mg_codec_add_image_url(a, pv, url, mg_ir_jstr(iu, "detail"));
    } else {
        mg_ir_parts_add(a, pv, MG_IR_PART_OPAQUE)->raw = item; /* input_audio, file */
    }
    return 0;
}

/* content: a string, null, or an array of parts. */
static const mg_codec_content_t content_rules = {decode_part, "message content must be a string or an array",
                                                 "a content part has no type", true};

static int decode_content(mg_ir_arena_t *a, const cJSON *content, mg_ir_parts_t *pv, char *err, size_t errlen)
{
    return mg_codec_decode_content(&content_rules, a, content, pv, NULL, err, errlen);
}

static int decode_messages(const cJSON *msgs, mg_ir_arena_t *a, mg_ir_request_t *r, char *err,
                           size_t errlen)
{
    if (!cJSON_IsArray(msgs)) return mg_ir_fail(err, errlen, "messages must be an array");
    mg_ir_parts_t sys = {0};
    size_t cap = 0;
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = mg_ir_jstr(m, "role");
        if (!role) return mg_ir_fail(err, errlen, "messages[%d] has no role", i);
        const cJSON *content = mg_ir_jget(m, "content");
        mg_ir_parts_t pv = {0};
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            /* B.1: every system and developer message becomes the system prompt. */
            if (decode_content(a, content, &pv, err, errlen)) return -1;
            mg_codec_add_texts(a, &sys, &pv);
        } else if (strcmp(role, "user") == 0) {
            if (decode_content(a, content, &pv, err, errlen)) return -1;
            mg_ir_add_message(a, r, &cap, MG_IR_USER, &pv)->raw = m;
        } else if (strcmp(role, "assistant") == 0) {
            const char *rc = reasoning_field(m);
            if (rc && *rc) mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING)->text = rc;
            if (decode_content(a, content, &pv, err, errlen)) return -1;
            const cJSON *tcs = mg_ir_jget(m, "tool_calls"), *tc;
            cJSON_ArrayForEach(tc, mg_ir_arr(tcs))
            {
                const cJSON *fn = mg_ir_jget(tc, "function");
                mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_CALL);
                p->id = mg_ir_jstr(tc, "id");
                p->name = mg_ir_jstr(fn, "name");
                if (!p->id || !p->name) return mg_ir_fail(err, errlen, "messages[%d]: a tool call needs an id and a function name", i);
                p->arguments = args_text(a, mg_ir_jget(fn, "arguments"));
            }
            mg_ir_add_message(a, r, &cap, MG_IR_ASSISTANT, &pv)->raw = m;
        } else if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0) {
            mg_ir_parts_t res = {0};
            mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_RESULT);
            p->id = mg_ir_jstr(m, strcmp(role, "tool") == 0 ? "tool_call_id" : "name");
            if (!p->id) return mg_ir_fail(err, errlen, "messages[%d]: a tool message needs tool_call_id", i);
            if (decode_content(a, content, &res, err, errlen)) return -1;
            p->parts = res.v;
            p->n_parts = res.n;
            mg_ir_add_message(a, r, &cap, MG_IR_TOOL, &pv)->raw = m;
        } else {
            return mg_ir_fail(err, errlen, "messages[%d]: unknown role \"%s\"", i, role);
        }
        i++;
    }
    r->system = sys.v;
    r->n_system = sys.n;
    return 0;
}

static int decode_tools(const cJSON *tools, mg_ir_arena_t *a, mg_ir_request_t *r, char *err, size_t errlen)
{
    if (!tools || cJSON_IsNull(tools)) return 0;
    if (!cJSON_IsArray(tools)) return mg_ir_fail(err, errlen, "tools must be an array");
    int n = cJSON_GetArraySize(tools), i = 0;
    r->tools = mg_ir_alloc(a, (size_t)(n ? n : 1) * sizeof *r->tools);
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        mg_ir_tool_t *o = &r->tools[r->n_tools++];
        o->strict = -1;
        const char *type = mg_ir_jstr(t, "type");
        const cJSON *fn = mg_ir_jget(t, "function");
        if ((!type || strcmp(type, "function") == 0) && cJSON_IsObject(fn)) {
            o->name = mg_ir_jstr(fn, "name");
            if (!o->name) return mg_ir_fail(err, errlen, "tools[%d] has no function name", i);
            mg_codec_decode_tool(o, fn, "parameters");
        } else {
            o->raw = t;
            o->name = mg_ir_jstr(t, "type");
        }
        i++;
    }
    return 0;
}

static void decode_tool_choice(const cJSON *tc, mg_ir_request_t *r)
{
    if (cJSON_IsString(tc)) {
        r->tool_choice = mg_codec_openai_tool_choice(tc->valuestring);
    } else if (mg_codec_openai_allowed_tools(tc, r)) {
        /* the choice and the tools it allows are set */
    } else if (cJSON_IsObject(tc)) {
        const char *name = mg_ir_jstr(mg_ir_jget(tc, "function"), "name");
        if (name) {
            r->tool_choice = MG_IR_TOOL_CHOICE_NAMED;
            r->tool_choice_name = name;
        } else {
            r->tool_choice = MG_IR_TOOL_CHOICE_AUTO;
        }
    }
}

int mg_openai_chat_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *r,
                                  char *err, size_t errlen)
{
    if (!cJSON_IsObject(body)) return mg_ir_fail(err, errlen, "the request body must be a JSON object");
    mg_ir_request_init(a, r, API);
    r->model = mg_ir_jstr(body, "model");
    if (decode_messages(mg_ir_jget(body, "messages"), a, r, err, errlen)) return -1;
    if (decode_tools(mg_ir_jget(body, "tools"), a, r, err, errlen)) return -1;
    decode_tool_choice(mg_ir_jget(body, "tool_choice"), r);
    const cJSON *v = mg_ir_jget(body, "parallel_tool_calls");
    if (cJSON_IsBool(v)) r->parallel_tool_calls = cJSON_IsTrue(v);
    int64_t mct = mg_ir_jint(body, "max_completion_tokens", -1);
    if (mct >= 0) {
        r->max_output_tokens = mct;
        r->max_completion_tokens_field = true;
    } else {
        r->max_output_tokens = mg_ir_jint(body, "max_tokens", -1);
    }
    mg_codec_decode_stop(a, mg_ir_jget(body, "stop"), r);
    mg_codec_decode_sampling(body, r);
    r->effort = mg_ir_effort_parse(mg_ir_jstr(body, "reasoning_effort"));
    if (r->effort == MG_IR_EFFORT_UNSET) /* OpenRouter / Ollama {"reasoning":{"effort":…}}; kept in extras too */
        r->effort = mg_ir_effort_parse(mg_ir_jstr(mg_ir_jget(body, "reasoning"), "effort"));
    r->stream = cJSON_IsTrue(mg_ir_jget(body, "stream"));
    r->include_usage = cJSON_IsTrue(mg_ir_jget(mg_ir_jget(body, "stream_options"), "include_usage"));
    r->user = mg_ir_jstr(body, "user");
    const cJSON *rf = mg_ir_jget(body, "response_format");
    mg_codec_decode_format(r, mg_ir_jstr(rf, "type"), mg_ir_jget(rf, "json_schema"));
    int64_t n = mg_ir_jint(body, "n", 1);
    r->n = n > 1 ? (int)MG_MIN(n, 128) : 1;
    mg_codec_decode_extras(body, r, known_request_fields, MG_ARRAY_LEN(known_request_fields));
    return 0;
}

/* ---- requests: encode ---- */

static cJSON *image_json(const mg_ir_part_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "image_url");
    cJSON *iu = cJSON_AddObjectToObject(o, "image_url");
    char *u = mg_codec_image_url(p);
    cJSON_AddStringToObject(iu, "url", u);
    free(u);
    if (p->detail) cJSON_AddStringToObject(iu, "detail", p->detail);
    return o;
}

/* User content: a plain string when it is one text, else an array of parts. */
static cJSON *user_content(const mg_ir_request_t *ir, const mg_ir_part_t *parts, size_t n,
                           char *err, size_t errlen)
{
    /* Only text, images and this API's own parts go out; one lone text is a plain string. */
    size_t kept = 0, last = 0;
    for (size_t i = 0; i < n; i++)
        if (parts[i].type == MG_IR_PART_TEXT || parts[i].type == MG_IR_PART_IMAGE || parts[i].type == MG_IR_PART_OPAQUE)
            kept++, last = i;
    if (kept == 1 && parts[last].type == MG_IR_PART_TEXT) return cJSON_CreateString(parts[last].text);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        const mg_ir_part_t *p = &parts[i];
        if (p->type == MG_IR_PART_TEXT) {
            cJSON_AddItemToArray(arr, mg_codec_text_json("text", p->text));
        } else if (p->type == MG_IR_PART_IMAGE) {
            cJSON_AddItemToArray(arr, image_json(p));
        } else if (p->type == MG_IR_PART_OPAQUE) {
            if (!mg_ir_same_api(ir->source, API)) {
                cJSON_Delete(arr);
                mg_codec_opaque_fail(p, API, err, errlen);
                return NULL;
            }
            cJSON_AddItemToArray(arr, cJSON_Duplicate(p->raw, true));
        }
    }
    return arr;
}

/* A tool_calls[] element (requests and whole responses alike). */
static cJSON *tool_call_json(const char *id, const char *name, const char *arguments)
{
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "id", id);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", arguments ? arguments : "{}");
    return tc;
}

/* A Chat request re-encoded for Chat: the members of the client's message that o lacks and the
 * codec never writes (name, prefix…) go back on it. What the codec writes, or left out on purpose
 * (reasoning, tool calls compaction dropped), is not taken from raw. */
static void copy_message_extras(const mg_ir_request_t *ir, const cJSON *raw, cJSON *o)
{
    static const char *const written[] = {"role", "content", "tool_calls", "tool_call_id", "function_call",
                                          "reasoning_content", "reasoning", "reasoning_details", NULL};
    if (!raw || !mg_ir_same_api(ir->source, API)) return;
    for (const cJSON *f = raw->child; f; f = f->next) {
        bool skip = cJSON_GetObjectItemCaseSensitive(o, f->string) != NULL;
        for (const char *const *w = written; *w && !skip; w++) skip = strcmp(*w, f->string) == 0;
        if (!skip) cJSON_AddItemToObject(o, f->string, cJSON_Duplicate(f, true));
    }
}

/* A tool message's content: its texts joined; with parts kept raw (a Chat client's own file or
 * audio parts: mg_codec_check_result refused them for any other), its texts and those parts as
 * an array, in order. Images are left to the user message after it. */
static void add_result_content(cJSON *o, const mg_ir_part_t *p)
{
    if (!mg_codec_has_opaque(p->parts, p->n_parts)) {
        mg_codec_add_joined(o, "content", p->parts, p->n_parts);
        return;
    }
    cJSON *arr = cJSON_AddArrayToObject(o, "content");
    for (size_t i = 0; i < p->n_parts; i++) {
        const mg_ir_part_t *q = &p->parts[i];
        if (q->type == MG_IR_PART_TEXT) cJSON_AddItemToArray(arr, mg_codec_text_json("text", q->text));
        else if (q->type == MG_IR_PART_OPAQUE) cJSON_AddItemToArray(arr, cJSON_Duplicate(q->raw, true));
    }
}

static int encode_messages(const mg_ir_request_t *ir, cJSON *msgs, char *err, size_t errlen)
{
    if (ir->n_system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        mg_codec_add_joined(m, "content", ir->system, ir->n_system);
        cJSON_AddItemToArray(msgs, m);
    }
    for (size_t i = 0; i < ir->n_messages; i++) {
        const mg_ir_message_t *m = &ir->messages[i];
        if (m->role == MG_IR_USER) {
            /* A user message may carry tool results when a decoder left them there. */
            cJSON *c = user_content(ir, m->parts, m->n_parts, err, errlen);
            if (!c) return -1;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "role", "user");
            cJSON_AddItemToObject(o, "content", c);
            copy_message_extras(ir, m->raw, o);
            cJSON_AddItemToArray(msgs, o);
        } else if (m->role == MG_IR_ASSISTANT) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "role", "assistant");
            char *text = mg_ir_join_text(m->parts, m->n_parts, "\n\n");
            cJSON *tcs = NULL;
            for (size_t k = 0; k < m->n_parts; k++) {
                const mg_ir_part_t *p = &m->parts[k];
                if (p->type == MG_IR_PART_OPAQUE && !mg_ir_same_api(ir->source, API)) {
                    free(text);
                    cJSON_Delete(tcs);
                    cJSON_Delete(o);
                    return mg_ir_fail(err, errlen, "assistant content of type \"%s\" cannot be sent to %s",
                                      mg_ir_jstr(p->raw, "type") ? mg_ir_jstr(p->raw, "type") : "?",
                                      mg_api_name(API));
                }
                if (p->type != MG_IR_PART_TOOL_CALL) continue;
                if (!tcs) tcs = cJSON_CreateArray();
                cJSON_AddItemToArray(tcs, tool_call_json(p->id, p->name, p->arguments));
            }
            /* Reasoning is not sent back: several servers reject reasoning_content on input. */
            if (text) cJSON_AddStringToObject(o, "content", text);
            else if (tcs) cJSON_AddNullToObject(o, "content");
            else cJSON_AddStringToObject(o, "content", "");
            free(text);
            if (tcs) cJSON_AddItemToObject(o, "tool_calls", tcs);
            copy_message_extras(ir, m->raw, o);
            cJSON_AddItemToArray(msgs, o);
        } else {
            /* One Chat tool message per result; images in results follow as a user message. */
            cJSON *images = NULL;
            for (size_t k = 0; k < m->n_parts; k++) {
                const mg_ir_part_t *p = &m->parts[k];
                if (p->type != MG_IR_PART_TOOL_RESULT) continue;
                if (mg_codec_check_result(ir, p, API, err, errlen)) {
                    cJSON_Delete(images);
                    return -1;
                }
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "role", "tool");
                cJSON_AddStringToObject(o, "tool_call_id", p->id ? p->id : "");
                add_result_content(o, p);
                if (m->n_parts == 1) copy_message_extras(ir, m->raw, o); /* raw is this result's message */
                cJSON_AddItemToArray(msgs, o);
                for (size_t q = 0; q < p->n_parts; q++) {
                    if (p->parts[q].type != MG_IR_PART_IMAGE) continue;
                    if (!images) images = cJSON_CreateArray();
                    cJSON_AddItemToArray(images, image_json(&p->parts[q]));
                }
            }
            if (images) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "role", "user");
                cJSON_AddItemToObject(o, "content", images);
                cJSON_AddItemToArray(msgs, o);
            }
        }
    }
    return 0;
}

static cJSON *tool_json(const mg_ir_tool_t *t, bool same)
{
    cJSON *tj = cJSON_CreateObject();
    cJSON_AddStringToObject(tj, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tj, "function");
    mg_codec_add_tool_fields(fn, t, "parameters");
    if (t->strict >= 0) cJSON_AddBoolToObject(fn, "strict", t->strict);
    return tj;
}

cJSON *mg_openai_chat_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                     char *err, size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, API);
    if (ir->previous_response_id && !mg_ir_same_api(ir->source, API)) {
        mg_ir_fail(err, errlen, "previous_response_id needs an openai-responses upstream");
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", opts && opts->model ? opts->model : ir->model ? ir->model : "");
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    if (encode_messages(ir, msgs, err, errlen)) goto error;
    if (ir->n_tools) {
        if (mg_codec_encode_tools(o, ir, API, tool_json, err, errlen)) goto error;
        if (ir->parallel_tool_calls >= 0) cJSON_AddBoolToObject(o, "parallel_tool_calls", ir->parallel_tool_calls);
    }
    cJSON *named = mg_codec_openai_tool_choice_json(o, ir->tool_choice);
    if (named) cJSON_AddStringToObject(cJSON_AddObjectToObject(named, "function"), "name", ir->tool_choice_name);
    if (ir->max_output_tokens >= 0) {
        bool mct = (same && ir->max_completion_tokens_field) || (opts && opts->prefer_max_completion_tokens);
        mg_ir_add_int(o, mct ? "max_completion_tokens" : "max_tokens", ir->max_output_tokens);
    }
    if (ir->n_stop) mg_codec_add_strings(o, "stop", ir->stop, ir->n_stop);
    if (ir->has_temperature) cJSON_AddNumberToObject(o, "temperature", ir->temperature);
    if (ir->has_top_p) cJSON_AddNumberToObject(o, "top_p", ir->top_p);
    mg_ir_effort_t eff = mg_ir_request_effort(ir);
    if (eff == MG_IR_EFFORT_UNSET) eff = ir->output_effort;
    /* "none" is only forwarded as the client wrote it; Anthropic's "thinking disabled" means
     * "do not ask", not "ask for none" (which older models reject). The OpenRouter-style
     * `reasoning` object of a Chat client travels in extras instead. */
    if (eff != MG_IR_EFFORT_UNSET && (eff != MG_IR_EFFORT_NONE || same) &&
        !(same && cJSON_GetObjectItemCaseSensitive(ir->extras, "reasoning")))
        cJSON_AddStringToObject(o, "reasoning_effort", mg_ir_effort_name(eff));
    if (ir->format == MG_IR_FORMAT_TEXT || ir->format == MG_IR_FORMAT_JSON_OBJECT) {
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "response_format"), "type",
                                ir->format == MG_IR_FORMAT_TEXT ? "text" : "json_object");
    } else if (ir->format == MG_IR_FORMAT_JSON_SCHEMA) {
        cJSON *rf = cJSON_AddObjectToObject(o, "response_format");
        cJSON_AddStringToObject(rf, "type", "json_schema");
        mg_codec_add_format_schema(cJSON_AddObjectToObject(rf, "json_schema"), ir);
    }
    if (ir->n > 1) mg_ir_add_int(o, "n", ir->n);
    if (ir->user) cJSON_AddStringToObject(o, "user", ir->user);
    if (ir->stream) {
        cJSON_AddBoolToObject(o, "stream", true);
        /* Always: Anthropic's message_delta and Responses' response.completed need the usage
         * (B.5.1); the Chat encoder drops the chunk if the client did not ask for it. */
        cJSON_AddBoolToObject(cJSON_AddObjectToObject(o, "stream_options"), "include_usage", true);
    }
    if (same) mg_ir_copy_extras(o, ir);
    return o;
error:
    cJSON_Delete(o);
    return NULL;
}

/* ---- whole responses ---- */

int mg_openai_chat_decode_response(const cJSON *body, mg_ir_arena_t *a,
                                   const mg_ir_decode_opts_t *opts, mg_ir_response_t *out,
                                   char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->usage = MG_IR_USAGE_UNKNOWN;
    mg_ir_error_t e;
    if (mg_ir_error_from_json(body, 0, &e)) return mg_ir_fail(err, errlen, "upstream error: %s", e.message);
    const cJSON *choices = mg_ir_jget(body, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    if (!cJSON_IsObject(c0)) return mg_ir_fail(err, errlen, "the answer has no choices");
    out->id = mg_ir_jstr(body, "id");
    out->model = mg_ir_jstr(body, "model");
    out->created = mg_ir_jint(body, "created", 0);
    const char *fr = mg_ir_jstr(c0, "finish_reason");
    if (fr && strcmp(fr, "error") == 0) return mg_ir_fail(err, errlen, "upstream error: finish_reason \"error\"");
    out->finish = mg_openai_chat_parse_finish(fr);
    const cJSON *msg = mg_ir_jget(c0, "message");
    mg_ir_parts_t pv = {0};
    const char *rc = reasoning_field(msg);
    if (rc && *rc) mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING)->text = rc;
    const cJSON *content = mg_ir_jget(msg, "content");
    mg_ir_parts_t cv = {0};
    if (decode_content(a, content, &cv, err, errlen)) return -1;
    mg_buf_t text = {0};
    for (size_t i = 0; i < cv.n; i++)
        if (cv.v[i].type == MG_IR_PART_TEXT) mg_buf_puts(&text, cv.v[i].text);
    if (text.len) {
        think_t th = {.mode = opts && opts->no_think_tags ? THINK_OFF : THINK_PRE};
        mg_buf_t r = {0}, t = {0};
        think_feed(&th, text.data, text.len, &r, &t);
        think_flush(&th, &r, &t);
        if (r.len) mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING)->text = mg_ir_strndup(a, r.data, r.len);
        if (t.len) mg_ir_parts_add(a, &pv, MG_IR_PART_TEXT)->text = mg_ir_strndup(a, t.data, t.len);
        mg_buf_free(&r);
        mg_buf_free(&t);
        mg_buf_free(&th.hold);
    }
    mg_buf_free(&text);
    const char *refusal = mg_ir_jstr(msg, "refusal");
    if (refusal && *refusal) {
        mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TEXT);
        p->text = refusal;
        p->refusal = true;
    }
    const cJSON *tcs = mg_ir_jget(msg, "tool_calls"), *tc;
    cJSON_ArrayForEach(tc, mg_ir_arr(tcs))
    {
        const cJSON *fn = mg_ir_jget(tc, "function");
        mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_CALL);
        p->id = mg_ir_jstr(tc, "id");
        if (!p->id || !*p->id) { /* Ollama, vLLM: unique, so that no later answer repeats it */
            char *made = mg_codec_new_call_id("call_");
            p->id = mg_ir_strdup(a, made);
            free(made);
        }
        p->name = mg_codec_jtext(fn, "name");
        p->arguments = args_text(a, mg_ir_jget(fn, "arguments"));
    }
    out->parts = pv.v;
    out->n_parts = pv.n;
    const cJSON *u = mg_ir_jget(body, "usage");
    if (cJSON_IsObject(u)) out->usage = usage_from_json(u);
    return 0;
}

cJSON *mg_openai_chat_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts)
{
    cJSON *o = cJSON_CreateObject();
    char *id = mg_codec_answer_id(opts->keep_upstream_id ? "" : "chatcmpl-", opts->id, r->id, "chatcmpl-moongate");
    cJSON_AddStringToObject(o, "id", id);
    free(id);
    cJSON_AddStringToObject(o, "object", "chat.completion");
    mg_ir_add_int(o, "created", mg_ir_created(opts, r->created));
    cJSON_AddStringToObject(o, "model", mg_ir_model_shown(opts, r->model));
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), choice);
    mg_ir_add_int(choice, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    mg_buf_t text = {0}, reasoning = {0}, refusal = {0};
    bool any_text = false, any_reasoning = false, any_refusal = false;
    cJSON *tcs = NULL;
    for (size_t i = 0; i < r->n_parts; i++) {
        const mg_ir_part_t *p = &r->parts[i];
        if (p->type == MG_IR_PART_TEXT && p->refusal) {
            mg_buf_puts(&refusal, p->text ? p->text : "");
            any_refusal = true;
        } else if (p->type == MG_IR_PART_TEXT) {
            mg_buf_puts(&text, p->text ? p->text : "");
            any_text = true;
        } else if (p->type == MG_IR_PART_REASONING && !opts->strip_reasoning && p->text) {
            mg_buf_puts(&reasoning, p->text);
            any_reasoning = true;
        } else if (p->type == MG_IR_PART_TOOL_CALL) {
            if (!tcs) tcs = cJSON_CreateArray();
            cJSON_AddItemToArray(tcs, tool_call_json(p->id ? p->id : "", p->name ? p->name : "", p->arguments));
        }
    }
    /* A refusal alone has null content, as OpenAI sends it: the SDK's parse() helpers read
     * message.refusal and parse content only when there is no refusal. */
    if (any_text) cJSON_AddStringToObject(msg, "content", text.data ? text.data : "");
    else if (tcs || any_refusal) cJSON_AddNullToObject(msg, "content");
    else cJSON_AddStringToObject(msg, "content", "");
    if (any_reasoning) cJSON_AddStringToObject(msg, "reasoning_content", reasoning.data ? reasoning.data : "");
    if (tcs) cJSON_AddItemToObject(msg, "tool_calls", tcs);
    if (any_refusal) cJSON_AddStringToObject(msg, "refusal", refusal.data ? refusal.data : "");
    else cJSON_AddNullToObject(msg, "refusal");
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason",
                            mg_openai_chat_finish_reason(mg_ir_effective_finish(r->finish, tcs != NULL)));
    if (usage_known(&r->usage)) cJSON_AddItemToObject(o, "usage", usage_to_json(&r->usage));
    mg_buf_free(&text);
    mg_buf_free(&reasoning);
    mg_buf_free(&refusal);
    return o;
}

char *mg_openai_chat_encode_error(int status, const char *type, const char *code, const char *message)
{
    return mg_codec_openai_error(API, status, type, code, message);
}

/* ---- stream decoder ---- */

typedef struct chat_tool {
    int up_index; /* the upstream's tool_calls[].index, -1 when it sent none */
    char *id;
    char *name;
    mg_buf_t args;  /* the arguments so far */
    bool emitted;   /* its TOOL_CALL_START went out; a held call's events wait in name/args */
    bool own_id;    /* id is the upstream's (not made up here) */
} chat_tool_t;

/* Tool calls go out one after the other (the Anthropic and Responses encoders cannot reopen a
 * call once the next one started). A Chat upstream may interleave the argument fragments of
 * parallel calls by index, so a call that starts while the one streaming has arguments that are
 * not yet a whole JSON value is held, with its fragments, until that one completes (or the
 * answer finishes): then it goes out whole and streaming continues with it. */
typedef struct chat_dec {
    bool started, finished, ended;
    think_t think;
    chat_tool_t *tools;
    int n_tools, cap_tools;
    int cur_tool; /* the call streaming live, -1 none */
    mg_buf_t r, t; /* think_feed output */
} chat_dec_t;

void *mg_openai_chat_decoder_new(const mg_ir_decode_opts_t *opts)
{
    chat_dec_t *d = mg_xcalloc(1, sizeof *d);
    d->think.mode = opts && opts->no_think_tags ? THINK_OFF : THINK_PRE;
    d->cur_tool = -1;
    return d;
}

void mg_openai_chat_decoder_free(void *st)
{
    chat_dec_t *d = st;
    if (!d) return;
    for (int i = 0; i < d->n_tools; i++) {
        free(d->tools[i].id);
        free(d->tools[i].name);
        mg_buf_free(&d->tools[i].args);
    }
    free(d->tools);
    mg_buf_free(&d->think.hold);
    mg_buf_free(&d->r);
    mg_buf_free(&d->t);
    free(d);
}

/* Emits what think_feed/think_flush left in d->r and d->t: reasoning first. */
static int emit_split(chat_dec_t *d, mg_ir_event_cb cb, void *ud)
{
    mg_ir_event_t ev = {.type = MG_IR_EV_REASONING_DELTA};
    int rc = 0;
    if (d->r.len) {
        ev.text = d->r.data;
        ev.text_len = d->r.len;
        rc = cb(ud, &ev);
    }
    if (!rc && d->t.len) {
        ev.type = MG_IR_EV_TEXT_DELTA;
        ev.text = d->t.data;
        ev.text_len = d->t.len;
        rc = cb(ud, &ev);
    }
    mg_buf_reset(&d->r);
    mg_buf_reset(&d->t);
    return rc;
}

static int flush_think(chat_dec_t *d, mg_ir_event_cb cb, void *ud)
{
    think_flush(&d->think, &d->r, &d->t);
    return emit_split(d, cb, ud);
}

/* The call a fragment continues: the latest one with its index (or, without an index, its id),
 * NULL for a new call. A fragment that names a function and carries an id other than the
 * upstream's id of the call at its index opens a new call: Ollama, SGLang and some adapters send
 * every parallel call as index 0, told apart by their ids only. Without a name it continues the
 * call (some servers change a call's id between its first fragment and its arguments). */
static chat_tool_t *find_tool(chat_dec_t *d, int up_index, const char *id, const char *name)
{
    for (int i = d->n_tools - 1; i >= 0; i--) {
        chat_tool_t *t = &d->tools[i];
        if (up_index >= 0 && t->up_index == up_index)
            return id && name && *name && t->own_id && strcmp(t->id, id) != 0 ? NULL : t;
        if (up_index < 0 && id && strcmp(t->id, id) == 0) return t;
    }
    if (up_index < 0 && !id && d->n_tools) return &d->tools[d->n_tools - 1];
    return NULL;
}

/* Whether a call's arguments so far are a whole JSON value (the call may be complete). */
static bool args_complete(const chat_tool_t *t)
{
    cJSON *j = mg_ir_parse_text(t->args.data ? t->args.data : "", t->args.len);
    cJSON_Delete(j);
    return j != NULL;
}

/* Sends held calls in order: all of them when all is true (the answer finished, or other
 * content follows), else while the call streaming live is complete. A call with no argument
 * bytes yet is not: every streamed call opens with "" and may get its arguments after the next
 * call has opened. So a call that never gets any (a tool without parameters) holds the calls
 * after it until the answer ends; they then go out whole, and it gets "{}" from the encoders. */
static int release_tools(chat_dec_t *d, bool all, mg_ir_event_cb cb, void *ud)
{
    for (int i = d->cur_tool + 1; i < d->n_tools; i++) {
        chat_tool_t *t = &d->tools[i];
        if (t->emitted) continue;
        if (!all && d->cur_tool >= 0 && !args_complete(&d->tools[d->cur_tool])) break;
        t->emitted = true;
        d->cur_tool = i;
        mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_START, .index = i, .id = t->id,
                            .name = t->name ? t->name : ""};
        MG_CODEC_EMIT(ev);
        if (t->args.len) {
            mg_ir_event_t dv = {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = i, .text = t->args.data,
                                .text_len = t->args.len};
            MG_CODEC_EMIT(dv);
        }
    }
    return 0;
}

static bool tools_held(const chat_dec_t *d)
{
    return d->n_tools > 0 && !d->tools[d->n_tools - 1].emitted;
}

/* What the decoder still holds (think-tag text, tool calls waiting for the live one), sent
 * before an error ends the stream: whatever the upstream sent before its error reaches the
 * client, as it would have had the calls not been interleaved. */
static int flush_held(chat_dec_t *d, mg_ir_event_cb cb, void *ud)
{
    int rc = flush_think(d, cb, ud);
    return rc ? rc : release_tools(d, true, cb, ud);
}

/* A fragment's arguments: a string as it came; an object or array (off-spec servers send the
 * arguments so, whole, instead of their JSON text) as its JSON text, read as the whole-answer
 * decoder's args_text reads it (*owned is then that text, which the caller cJSON_frees); else NULL. */
static const char *delta_args(const cJSON *v, char **owned)
{
    *owned = NULL;
    if (cJSON_IsString(v)) return v->valuestring;
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return NULL;
    *owned = cJSON_PrintUnformatted(v);
    if (!*owned) abort(); /* cJSON fails only when allocation fails */
    return *owned;
}

/* One tool_calls[] element of a delta, its arguments fragment args (or NULL). */
static int decode_tool_delta(chat_dec_t *d, const cJSON *tc, const char *args, mg_ir_event_cb cb, void *ud)
{
    int up = (int)mg_ir_jint(tc, "index", -1);
    const char *id = mg_ir_jstr(tc, "id");
    const cJSON *fn = mg_ir_jget(tc, "function");
    const char *name = mg_ir_jstr(fn, "name");
    if (id && !*id) id = NULL;
    chat_tool_t *t = find_tool(d, up, id, name);
    if (t && !t->emitted && name && *name && !*t->name) {
        free(t->name); /* a held call whose name came after its first fragment */
        t->name = mg_xstrdup(name);
    }
    if (!t) {
        bool held_before = tools_held(d);
        if (d->n_tools == d->cap_tools) {
            d->cap_tools = d->cap_tools ? d->cap_tools * 2 : 4;
            d->tools = mg_xrealloc(d->tools, (size_t)d->cap_tools * sizeof *d->tools);
        }
        t = &d->tools[d->n_tools];
        memset(t, 0, sizeof *t);
        t->up_index = up;
        t->id = id ? mg_xstrdup(id) : mg_codec_new_call_id("call_"); /* kept for all its events */
        t->own_id = id != NULL;
        t->name = mg_xstrdup(name ? name : "");
        d->n_tools++;
        /* Live when nothing is held and the call streaming (if any) looks complete. */
        bool live = d->cur_tool < 0 || (!held_before && args_complete(&d->tools[d->cur_tool]));
        if (live) {
            t->emitted = true;
            d->cur_tool = d->n_tools - 1;
            mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_START, .index = d->cur_tool, .id = t->id,
                                .name = t->name};
            MG_CODEC_EMIT(ev);
        }
    }
    if (args && *args) {
        size_t n = strlen(args);
        mg_buf_append(&t->args, args, n);
        if (t->emitted) {
            mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = (int)(t - d->tools),
                                .text = args, .text_len = n};
            MG_CODEC_EMIT(ev);
            if (t == &d->tools[d->cur_tool] && tools_held(d)) {
                int rc = release_tools(d, false, cb, ud);
                if (rc) return rc;
            }
        }
    }
    return 0;
}

static int decode_tool_deltas(chat_dec_t *d, const cJSON *tcs, mg_ir_event_cb cb, void *ud)
{
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        char *owned;
        const char *args = delta_args(mg_ir_jget(mg_ir_jget(tc, "function"), "arguments"), &owned);
        int rc = decode_tool_delta(d, tc, args, cb, ud);
        cJSON_free(owned);
        if (rc) return rc;
    }
    return 0;
}

static int decode_chunk(chat_dec_t *d, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    if (!d->started) {
        d->started = true;
        mg_ir_event_t ev = {.type = MG_IR_EV_START, .id = mg_ir_jstr(j, "id"),
                            .model = mg_ir_jstr(j, "model"), .created = mg_ir_jint(j, "created", 0),
                            .usage = MG_IR_USAGE_UNKNOWN};
        MG_CODEC_EMIT(ev);
    }
    const cJSON *choices = mg_ir_jget(j, "choices"), *c, *c0 = NULL;
    cJSON_ArrayForEach(c, mg_ir_arr(choices))
    {
        if (mg_ir_jint(c, "index", 0) == 0) {
            c0 = c;
            break;
        }
    }
    int rc;
    if (c0) {
        const cJSON *delta = mg_ir_jget(c0, "delta");
        if (tools_held(d)) {
            /* Other content after the calls: the held ones go out first, in order. */
            const char *rf = reasoning_field(delta), *ct = mg_ir_jstr(delta, "content"), *rs = mg_ir_jstr(delta, "refusal");
            if (((rf && *rf) || (ct && *ct) || (rs && *rs)) && (rc = release_tools(d, true, cb, ud))) return rc;
        }
        if ((rc = mg_codec_emit_text(MG_IR_EV_REASONING_DELTA, reasoning_field(delta), 0, cb, ud))) return rc;
        const char *content = mg_ir_jstr(delta, "content");
        if (content && *content) {
            think_feed(&d->think, content, strlen(content), &d->r, &d->t);
            if ((rc = emit_split(d, cb, ud))) return rc;
        }
        if ((rc = mg_codec_emit_refusal(mg_ir_jstr(delta, "refusal"), cb, ud))) return rc;
        const cJSON *tcs = mg_ir_jget(delta, "tool_calls");
        if (cJSON_IsArray(tcs) && cJSON_GetArraySize(tcs) > 0) {
            if ((rc = flush_think(d, cb, ud))) return rc;
            if ((rc = decode_tool_deltas(d, tcs, cb, ud))) return rc;
        }
        const char *fr = mg_ir_jstr(c0, "finish_reason");
        if (fr && !d->finished) { /* the first finish_reason counts */
            if (strcmp(fr, "error") == 0) {
                /* OpenRouter: a failure after generation started (A.6). */
                mg_ir_error_t e = {502, "server_error", NULL, "the upstream reported finish_reason \"error\""};
                if ((rc = flush_held(d, cb, ud))) return rc;
                return mg_codec_emit_error(&d->ended, &e, cb, ud);
            }
            if ((rc = flush_think(d, cb, ud))) return rc;
            if ((rc = release_tools(d, true, cb, ud))) return rc;
            d->finished = true;
            mg_ir_event_t ev = {.type = MG_IR_EV_FINISH, .finish = mg_openai_chat_parse_finish(fr)};
            MG_CODEC_EMIT(ev);
        }
    }
    const cJSON *u = mg_ir_jget(j, "usage");
    if (cJSON_IsObject(u)) {
        mg_ir_event_t ev = {.type = MG_IR_EV_USAGE, .usage = usage_from_json(u)};
        MG_CODEC_EMIT(ev);
    }
    return 0;
}

int mg_openai_chat_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                                size_t data_len, mg_ir_event_cb cb, void *ud)
{
    chat_dec_t *d = st;
    if (d->ended) return 0;
    size_t ws = skip_ws(data, data_len);
    if (data_len - ws >= 6 && memcmp(data + ws, "[DONE]", 6) == 0) {
        int rc = flush_think(d, cb, ud);
        if (!rc) rc = release_tools(d, true, cb, ud);
        return rc ? rc : mg_codec_emit_end(&d->ended, cb, ud);
    }
    bool error_event = type_len == 5 && memcmp(type, "error", 5) == 0; /* LM Studio */
    cJSON *j = mg_ir_parse_text(data, data_len);
    int rc = 0;
    if (!j) {
        if (error_event && !(rc = flush_held(d, cb, ud)))
            rc = mg_codec_emit_raw_error(&d->ended, "server_error", data, data_len, cb, ud);
        return rc; /* not JSON: nothing a Chat client could use */
    }
    const cJSON *err = mg_ir_jget(j, "error");
    const char *object = mg_ir_jstr(j, "object");
    if (error_event || (err && !cJSON_IsNull(err)) || (object && strcmp(object, "error") == 0)) {
        mg_ir_error_t e;
        if (!mg_ir_error_from_json(j, 0, &e)) e = (mg_ir_error_t){500, "server_error", NULL, "upstream error"};
        rc = flush_held(d, cb, ud);
        if (!rc) rc = mg_codec_emit_error(&d->ended, &e, cb, ud);
    } else {
        rc = decode_chunk(d, j, cb, ud);
    }
    cJSON_Delete(j);
    return rc;
}

int mg_openai_chat_decoder_finish(void *st, mg_ir_event_cb cb, void *ud)
{
    chat_dec_t *d = st;
    if (d->ended) return 0;
    int rc = flush_think(d, cb, ud);
    if (!rc) rc = release_tools(d, true, cb, ud);
    if (rc) return rc;
    /* A stream that ends after its finish_reason without [DONE] is accepted by the SDK. */
    if (d->finished) return mg_codec_emit_end(&d->ended, cb, ud);
    return mg_codec_emit_truncated(&d->ended, "server_error", cb, ud);
}

/* ---- stream encoder ---- */

typedef struct chat_enc {
    char *id, *model, *default_model;
    bool keep_id; /* mg_ir_output_opts_t.keep_upstream_id */
    int64_t created;
    bool strip, include_usage;
    bool started, finish_sent, done, any_tool;
    int cur_tool; /* the call whose arguments are streaming, -1 none */
    size_t cur_args;
    mg_ir_usage_t usage;
    bool have_usage;
    mg_buf_t head;  /* {"id":…,"object":"chat.completion.chunk","created":…,"model":… */
    mg_buf_t delta; /* scratch */
} chat_enc_t;

void *mg_openai_chat_encoder_new(const mg_ir_output_opts_t *opts)
{
    chat_enc_t *e = mg_xcalloc(1, sizeof *e);
    e->id = opts->id ? mg_xstrdup(opts->id) : NULL;
    e->keep_id = opts->keep_upstream_id;
    e->model = opts->model ? mg_xstrdup(opts->model) : NULL;
    e->default_model = opts->default_model ? mg_xstrdup(opts->default_model) : NULL;
    e->created = opts->created;
    e->strip = opts->strip_reasoning;
    e->include_usage = opts->include_usage;
    e->cur_tool = -1;
    e->usage = MG_IR_USAGE_UNKNOWN;
    return e;
}

void mg_openai_chat_encoder_free(void *st)
{
    chat_enc_t *e = st;
    if (!e) return;
    free(e->id);
    free(e->model);
    free(e->default_model);
    mg_buf_free(&e->head);
    mg_buf_free(&e->delta);
    free(e);
}

bool mg_openai_chat_encoder_done(const void *st)
{
    return ((const chat_enc_t *)st)->done;
}

/* data: {head,"choices":[{"index":0,"delta":<delta>,"logprobs":null,"finish_reason":<fr>}]} */
static void chunk(chat_enc_t *e, mg_buf_t *out, const char *delta, const char *finish)
{
    mg_buf_puts(out, "data: ");
    mg_buf_append(out, e->head.data, e->head.len);
    mg_buf_puts(out, ",\"choices\":[{\"index\":0,\"delta\":");
    mg_buf_puts(out, delta);
    mg_buf_puts(out, ",\"logprobs\":null,\"finish_reason\":");
    mg_buf_json_str(out, finish);
    mg_buf_puts(out, "}]}\n\n");
}

static void enc_start(chat_enc_t *e, const mg_ir_event_t *ev, mg_buf_t *out)
{
    if (e->started) return;
    e->started = true;
    char *id = mg_codec_answer_id(e->keep_id ? "" : "chatcmpl-", e->id, ev ? ev->id : NULL, "chatcmpl-moongate");
    mg_ir_output_opts_t o = {.created = e->created, .model = e->model, .default_model = e->default_model};
    const char *model = mg_ir_model_shown(&o, ev ? ev->model : NULL);
    mg_buf_puts(&e->head, "{\"id\":");
    mg_buf_json_str(&e->head, id);
    free(id);
    mg_buf_printf(&e->head, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                  (long long)mg_ir_created(&o, ev ? ev->created : 0));
    mg_buf_json_str(&e->head, model);
    /* The SDK's stream helper requires the role on a choice's first delta (B.5.7). */
    chunk(e, out, "{\"role\":\"assistant\",\"content\":\"\"}", NULL);
}

static void close_tool(chat_enc_t *e, mg_buf_t *out)
{
    if (e->cur_tool >= 0 && e->cur_args == 0) {
        /* A call without arguments: "{}" so the client's JSON.parse of the arguments works. */
        mg_buf_reset(&e->delta);
        mg_buf_printf(&e->delta, "{\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":\"{}\"}}]}", e->cur_tool);
        chunk(e, out, e->delta.data, NULL);
    }
    e->cur_tool = -1;
}

static void send_finish(chat_enc_t *e, mg_ir_finish_t f, mg_buf_t *out)
{
    if (e->finish_sent) return;
    e->finish_sent = true;
    chunk(e, out, "{}", mg_openai_chat_finish_reason(mg_ir_effective_finish(f, e->any_tool)));
}

void mg_openai_chat_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out)
{
    chat_enc_t *e = st;
    if (e->done) return;
    switch (ev->type) {
    case MG_IR_EV_START: enc_start(e, ev, out); break;
    case MG_IR_EV_REASONING_DELTA:
    case MG_IR_EV_TEXT_DELTA: {
        bool reasoning = ev->type == MG_IR_EV_REASONING_DELTA;
        if (!ev->text_len || (reasoning && e->strip)) break;
        enc_start(e, NULL, out);
        close_tool(e, out);
        mg_buf_reset(&e->delta);
        mg_buf_puts(&e->delta, reasoning ? "{\"reasoning_content\":" : ev->refusal ? "{\"refusal\":" : "{\"content\":");
        mg_buf_json_strn(&e->delta, ev->text, ev->text_len);
        mg_buf_puts(&e->delta, "}");
        chunk(e, out, e->delta.data, NULL);
        break;
    }
    case MG_IR_EV_REASONING_SIGNATURE: break; /* Chat has no place for it */
    case MG_IR_EV_TOOL_CALL_START:
        enc_start(e, NULL, out);
        close_tool(e, out);
        mg_buf_reset(&e->delta);
        mg_buf_printf(&e->delta, "{\"tool_calls\":[{\"index\":%d,\"id\":", ev->index);
        mg_buf_json_str(&e->delta, ev->id ? ev->id : "");
        mg_buf_puts(&e->delta, ",\"type\":\"function\",\"function\":{\"name\":");
        mg_buf_json_str(&e->delta, ev->name ? ev->name : "");
        mg_buf_puts(&e->delta, ",\"arguments\":\"\"}}]}");
        chunk(e, out, e->delta.data, NULL);
        e->cur_tool = ev->index;
        e->cur_args = 0;
        e->any_tool = true;
        break;
    case MG_IR_EV_TOOL_CALL_DELTA:
        if (!ev->text_len) break;
        enc_start(e, NULL, out);
        mg_buf_reset(&e->delta);
        mg_buf_puts(&e->delta, "{\"tool_calls\":[{\"index\":");
        mg_ir_buf_int(&e->delta, ev->index);
        mg_buf_puts(&e->delta, ",\"function\":{\"arguments\":");
        mg_buf_json_strn(&e->delta, ev->text, ev->text_len);
        mg_buf_puts(&e->delta, "}}]}");
        chunk(e, out, e->delta.data, NULL);
        if (ev->index == e->cur_tool) e->cur_args += ev->text_len;
        break;
    case MG_IR_EV_BLOCK_END: close_tool(e, out); break;
    case MG_IR_EV_OPAQUE_BLOCK: break; /* nothing Chat can say of it */
    case MG_IR_EV_FINISH:
        enc_start(e, NULL, out);
        close_tool(e, out);
        send_finish(e, ev->finish, out);
        break;
    case MG_IR_EV_USAGE:
        e->usage = ev->usage;
        e->have_usage = true;
        break;
    case MG_IR_EV_END:
        enc_start(e, NULL, out);
        close_tool(e, out);
        send_finish(e, MG_IR_FINISH_NONE, out);
        if (e->include_usage && e->have_usage && usage_known(&e->usage)) {
            cJSON *u = usage_to_json(&e->usage);
            char *us = cJSON_PrintUnformatted(u);
            if (!us) abort();
            mg_buf_puts(out, "data: ");
            mg_buf_append(out, e->head.data, e->head.len);
            mg_buf_puts(out, ",\"choices\":[],\"usage\":");
            mg_buf_puts(out, us);
            mg_buf_puts(out, "}\n\n");
            cJSON_free(us);
            cJSON_Delete(u);
        }
        mg_buf_puts(out, "data: [DONE]\n\n");
        e->done = true;
        break;
    case MG_IR_EV_ERROR: {
        /* The SDK throws APIError on a chunk with a top-level error (A.1); no [DONE] follows. */
        mg_codec_error_frame(out, NULL, &ev->error, mg_openai_chat_encode_error);
        e->done = true;
        break;
    }
    }
}

const mg_ir_codec_t mg_openai_chat_codec = {
    .api = API,
    .name = "openai-completions",
    .decode_request = mg_openai_chat_decode_request,
    .encode_request = mg_openai_chat_encode_request,
    .decode_response = mg_openai_chat_decode_response,
    .encode_response = mg_openai_chat_encode_response,
    .encode_error = mg_openai_chat_encode_error,
    .decoder_new = mg_openai_chat_decoder_new,
    .decoder_feed = mg_openai_chat_decoder_feed,
    .decoder_finish = mg_openai_chat_decoder_finish,
    .decoder_free = mg_openai_chat_decoder_free,
    .encoder_new = mg_openai_chat_encoder_new,
    .encoder_push = mg_openai_chat_encoder_push,
    .encoder_done = mg_openai_chat_encoder_done,
    .encoder_free = mg_openai_chat_encoder_free,
};
