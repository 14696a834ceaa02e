/* OpenAI Responses codec. See api_openai_responses.h; the wire facts are PROTOCOLS.md A.2 and the
 * translation notes B.1–B.6 (the SDK accumulator that the stream must satisfy is described there:
 * response.created first, items appended in output_index order, parts before deltas). */
#include "api_openai_responses.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_util.h"

#define API MG_API_OPENAI_RESPONSES

/* ---- usage and status ---- */

static mg_ir_usage_t usage_from_json(const cJSON *u)
{
    mg_ir_usage_t r = MG_IR_USAGE_UNKNOWN;
    r.input = mg_ir_jint(u, "input_tokens", -1);
    r.output = mg_ir_jint(u, "output_tokens", -1);
    r.cache_read = mg_ir_jint(mg_ir_jget(u, "input_tokens_details"), "cached_tokens", -1);
    r.reasoning = mg_ir_jint(mg_ir_jget(u, "output_tokens_details"), "reasoning_tokens", -1);
    return r;
}

static cJSON *usage_to_json(const mg_ir_usage_t *u)
{
    int64_t in = u->input > 0 ? u->input : 0, out = u->output > 0 ? u->output : 0;
    cJSON *j = cJSON_CreateObject();
    mg_ir_add_int(j, "input_tokens", in);
    mg_ir_add_int(cJSON_AddObjectToObject(j, "input_tokens_details"), "cached_tokens",
                  u->cache_read > 0 ? u->cache_read : 0);
    mg_ir_add_int(j, "output_tokens", out);
    mg_ir_add_int(cJSON_AddObjectToObject(j, "output_tokens_details"), "reasoning_tokens",
                  u->reasoning > 0 ? u->reasoning : 0);
    mg_ir_add_int(j, "total_tokens", in + out);
    return j;
}

static mg_ir_finish_t finish_from_response(const cJSON *resp)
{
    const char *status = mg_ir_jstr(resp, "status");
    if (status && strcmp(status, "incomplete") == 0) {
        const char *reason = mg_ir_jstr(mg_ir_jget(resp, "incomplete_details"), "reason");
        if (reason && strcmp(reason, "content_filter") == 0) return MG_IR_FINISH_CONTENT_FILTER;
        return MG_IR_FINISH_LENGTH;
    }
    return MG_IR_FINISH_STOP;
}

/* The incomplete reason for a finish, or NULL when the response is "completed" (B.3). */
static const char *incomplete_reason(mg_ir_finish_t f)
{
    switch (f) {
    case MG_IR_FINISH_LENGTH:
    case MG_IR_FINISH_CONTEXT_WINDOW: return "max_output_tokens";
    case MG_IR_FINISH_CONTENT_FILTER: return "content_filter";
    default: return NULL;
    }
}

/* ---- requests: decode ---- */

static const char *const known_request_fields[] = {
    "model",       "input",       "instructions", "max_output_tokens", "stream",
    "tools",       "tool_choice", "parallel_tool_calls",               "reasoning",
    "temperature", "top_p",       "user",         "previous_response_id",
};

/* One part of a content array. */
static int decode_part(mg_ir_arena_t *a, const cJSON *c, const char *type, mg_ir_parts_t *pv, void *ud, char *err,
                       size_t errlen)
{
    if (strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0 || strcmp(type, "text") == 0) {
        mg_codec_add_text(a, pv, c, "text");
    } else if (strcmp(type, "refusal") == 0) {
        mg_codec_add_text(a, pv, c, "refusal");
    } else if (strcmp(type, "input_image") == 0 && mg_ir_jstr(c, "image_url")) {
        const char *detail = mg_ir_jstr(c, "detail");
        if (detail && strcmp(detail, "auto") == 0) detail = NULL;
        mg_codec_add_image_url(a, pv, mg_ir_jstr(c, "image_url"), detail);
    } else {
        mg_ir_parts_add(a, pv, MG_IR_PART_OPAQUE)->raw = c; /* input_file, input_audio, images by file_id */
    }
    return 0;
}

/* Message content: a string or an array of input_text / input_image / output_text parts. */
static const mg_codec_content_t content_rules = {decode_part, "content must be a string or an array",
                                                 "a content part has no type", false};

static int decode_content(mg_ir_arena_t *a, const cJSON *content, mg_ir_parts_t *pv, char *err, size_t errlen)
{
    return mg_codec_decode_content(&content_rules, a, content, pv, NULL, err, errlen);
}

/* Joins the texts of a reasoning item: its summary parts, else its reasoning_text content. */
static const char *reasoning_text(mg_ir_arena_t *a, const cJSON *item)
{
    mg_buf_t b = {0};
    const char *keys[2] = {"summary", "content"};
    for (int k = 0; k < 2 && b.len == 0; k++) {
        const cJSON *arr = mg_ir_jget(item, keys[k]), *s;
        int n = 0;
        cJSON_ArrayForEach(s, mg_ir_arr(arr))
        {
            const char *t = mg_ir_jstr(s, "text");
            if (!t) continue;
            if (n++) mg_buf_puts(&b, "\n\n");
            mg_buf_puts(&b, t);
        }
    }
    const char *r = mg_ir_strndup(a, b.data ? b.data : "", b.len);
    mg_buf_free(&b);
    return r;
}

typedef struct builder {
    mg_ir_request_t *r;
    size_t cap;
    int role; /* the message being built, -1 none */
    mg_ir_parts_t parts;
} builder_t;

static void flush(mg_ir_arena_t *a, builder_t *b)
{
    if (b->role >= 0) mg_ir_add_message(a, b->r, &b->cap, (mg_ir_role_t)b->role, &b->parts);
    b->role = -1;
    memset(&b->parts, 0, sizeof b->parts);
}

/* The parts list of the message an item of this role belongs to: user messages stay apart;
 * one assistant turn (reasoning, messages, calls) and consecutive tool outputs merge. */
static mg_ir_parts_t *target(mg_ir_arena_t *a, builder_t *b, mg_ir_role_t role)
{
    if (b->role != (int)role || role == MG_IR_USER) {
        flush(a, b);
        b->role = (int)role;
    }
    return &b->parts;
}

static int decode_input(const cJSON *input, mg_ir_arena_t *a, mg_ir_request_t *r, mg_ir_parts_t *sys,
                        char *err, size_t errlen)
{
    builder_t b = {.r = r, .role = -1};
    if (cJSON_IsString(input)) {
        mg_ir_parts_add(a, target(a, &b, MG_IR_USER), MG_IR_PART_TEXT)->text = input->valuestring;
        flush(a, &b);
        return 0;
    }
    if (!cJSON_IsArray(input)) return mg_ir_fail(err, errlen, "input must be a string or an array");
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, input)
    {
        const char *type = mg_ir_jstr(it, "type");
        const char *role = mg_ir_jstr(it, "role");
        if (role && (!type || strcmp(type, "message") == 0)) {
            mg_ir_parts_t pv = {0};
            if (decode_content(a, mg_ir_jget(it, "content"), &pv, err, errlen)) return -1;
            if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
                mg_codec_add_texts(a, sys, &pv);
                continue;
            }
            mg_ir_role_t ir_role;
            if (strcmp(role, "user") == 0) ir_role = MG_IR_USER;
            else if (strcmp(role, "assistant") == 0) ir_role = MG_IR_ASSISTANT;
            else return mg_ir_fail(err, errlen, "input[%d]: unknown role \"%s\"", i, role);
            mg_ir_parts_t *t = target(a, &b, ir_role);
            for (size_t k = 0; k < pv.n; k++) {
                /* An assistant message holds only output_text / refusal: other parts are not
                 * valid there (and an assistant turn's opaque parts are whole items). */
                if (ir_role == MG_IR_ASSISTANT && pv.v[k].type != MG_IR_PART_TEXT) continue;
                mg_ir_part_t *p = mg_ir_parts_add(a, t, pv.v[k].type);
                *p = pv.v[k];
                if (ir_role == MG_IR_ASSISTANT) p->item_id = mg_ir_jstr(it, "id");
            }
        } else if (type && strcmp(type, "function_call") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, target(a, &b, MG_IR_ASSISTANT), MG_IR_PART_TOOL_CALL);
            p->item_id = mg_ir_jstr(it, "id");
            p->id = mg_ir_jstr(it, "call_id");
            p->name = mg_ir_jstr(it, "name");
            if (!p->id || !p->name) return mg_ir_fail(err, errlen, "input[%d]: a function_call needs call_id and name", i);
            const char *args = mg_ir_jstr(it, "arguments");
            p->arguments = args && *args ? args : "{}";
        } else if (type && strcmp(type, "function_call_output") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, target(a, &b, MG_IR_TOOL), MG_IR_PART_TOOL_RESULT);
            p->id = mg_ir_jstr(it, "call_id");
            if (!p->id) return mg_ir_fail(err, errlen, "input[%d]: a function_call_output needs call_id", i);
            mg_ir_parts_t inner = {0};
            if (decode_content(a, mg_ir_jget(it, "output"), &inner, err, errlen)) return -1;
            p->parts = inner.v;
            p->n_parts = inner.n;
        } else if (type && strcmp(type, "reasoning") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, target(a, &b, MG_IR_ASSISTANT), MG_IR_PART_REASONING);
            p->id = mg_ir_jstr(it, "id");
            p->text = reasoning_text(a, it);
            p->encrypted = mg_ir_jstr(it, "encrypted_content");
        } else if (type) {
            /* item_reference, built-in tool calls and their outputs: this API only. */
            mg_ir_parts_add(a, target(a, &b, MG_IR_ASSISTANT), MG_IR_PART_OPAQUE)->raw = it;
        } else {
            return mg_ir_fail(err, errlen, "input[%d] has neither a type nor a role", i);
        }
        i++;
    }
    flush(a, &b);
    return 0;
}

int mg_openai_responses_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *r,
                                       char *err, size_t errlen)
{
    if (!cJSON_IsObject(body)) return mg_ir_fail(err, errlen, "the request body must be a JSON object");
    mg_ir_request_init(a, r, API);
    r->model = mg_ir_jstr(body, "model");
    mg_ir_parts_t sys = {0};
    const char *instr = mg_ir_jstr(body, "instructions");
    if (instr) mg_ir_parts_add(a, &sys, MG_IR_PART_TEXT)->text = instr;
    const cJSON *input = mg_ir_jget(body, "input");
    if (input && decode_input(input, a, r, &sys, err, errlen)) return -1;
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
            if (!type || strcmp(type, "function") != 0) { /* web_search, file_search, mcp, … */
                o->raw = t;
                o->name = type ? type : "?";
                continue;
            }
            o->name = mg_ir_jstr(t, "name");
            if (!o->name) return mg_ir_fail(err, errlen, "a function tool has no name");
            mg_codec_decode_tool(o, t, "parameters");
        }
    }
    const cJSON *tc = mg_ir_jget(body, "tool_choice");
    if (cJSON_IsString(tc)) {
        r->tool_choice = mg_codec_openai_tool_choice(tc->valuestring);
    } else if (mg_codec_openai_allowed_tools(tc, r)) {
        /* the choice and the tools it allows are set */
    } else if (cJSON_IsObject(tc)) {
        const char *tct = mg_ir_jstr(tc, "type"), *name = mg_ir_jstr(tc, "name");
        if (tct && strcmp(tct, "function") == 0 && name) {
            r->tool_choice = MG_IR_TOOL_CHOICE_NAMED;
            r->tool_choice_name = name;
        } else {
            r->tool_choice = MG_IR_TOOL_CHOICE_AUTO;
        }
    }
    const cJSON *v = mg_ir_jget(body, "parallel_tool_calls");
    if (cJSON_IsBool(v)) r->parallel_tool_calls = cJSON_IsTrue(v);
    r->max_output_tokens = mg_ir_jint(body, "max_output_tokens", -1);
    mg_codec_decode_sampling(body, r);
    const cJSON *reasoning = mg_ir_jget(body, "reasoning");
    r->effort = mg_ir_effort_parse(mg_ir_jstr(reasoning, "effort"));
    r->reasoning_summary = mg_ir_jstr(reasoning, "summary");
    r->stream = cJSON_IsTrue(mg_ir_jget(body, "stream"));
    r->user = mg_ir_jstr(body, "user");
    r->previous_response_id = mg_ir_jstr(body, "previous_response_id");
    /* text.format for the other APIs; the whole `text` object also stays in extras so that a
     * same-API request keeps verbosity and the rest. */
    const cJSON *fmt = mg_ir_jget(mg_ir_jget(body, "text"), "format");
    mg_codec_decode_format(r, mg_ir_jstr(fmt, "type"), fmt);
    mg_codec_decode_extras(body, r, known_request_fields, MG_ARRAY_LEN(known_request_fields));
    return 0;
}

/* ---- requests: encode ---- */

static cJSON *image_json(const mg_ir_part_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "input_image");
    char *u = mg_codec_image_url(p);
    cJSON_AddStringToObject(o, "image_url", u);
    free(u);
    cJSON_AddStringToObject(o, "detail", p->detail ? p->detail : "auto");
    return o;
}

static cJSON *input_text_json(const char *text)
{
    return mg_codec_text_json("input_text", text ? text : "");
}

static cJSON *summary_part(const char *text)
{
    return mg_codec_text_json("summary_text", text ? text : "");
}

static int encode_user(const mg_ir_request_t *ir, const mg_ir_message_t *m, cJSON *input, char *err,
                       size_t errlen)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "role", "user");
    /* Only text, images and this API's own parts go out; one lone text is a plain string. */
    size_t kept = 0, last = 0;
    for (size_t k = 0; k < m->n_parts; k++)
        if (m->parts[k].type == MG_IR_PART_TEXT || m->parts[k].type == MG_IR_PART_IMAGE || m->parts[k].type == MG_IR_PART_OPAQUE)
            kept++, last = k;
    if (kept == 0) {
        /* Nothing this API can carry (a user turn of reasoning only): no empty message, which
         * the decoder would drop anyway (found by fuzzing: re-encoding was not idempotent). */
        cJSON_Delete(o);
        return 0;
    }
    if (kept == 1 && m->parts[last].type == MG_IR_PART_TEXT) {
        cJSON_AddStringToObject(o, "content", m->parts[last].text);
    } else {
        cJSON *c = cJSON_AddArrayToObject(o, "content");
        for (size_t k = 0; k < m->n_parts; k++) {
            const mg_ir_part_t *p = &m->parts[k];
            if (p->type == MG_IR_PART_TEXT) cJSON_AddItemToArray(c, input_text_json(p->text));
            else if (p->type == MG_IR_PART_IMAGE) cJSON_AddItemToArray(c, image_json(p));
            else if (p->type == MG_IR_PART_OPAQUE) {
                if (!mg_ir_same_api(ir->source, API)) {
                    cJSON_Delete(o);
                    return mg_codec_opaque_fail(p, API, err, errlen);
                }
                cJSON_AddItemToArray(c, cJSON_Duplicate(p->raw, true));
            }
        }
    }
    cJSON_AddItemToArray(input, o);
    return 0;
}

/* Whether TEXT part q belongs to the same message item as p (which has an item id). */
static bool same_item(const mg_ir_part_t *p, const mg_ir_part_t *q)
{
    return q->type == MG_IR_PART_TEXT && q->item_id && strcmp(q->item_id, p->item_id) == 0;
}

static int encode_assistant(const mg_ir_request_t *ir, const mg_ir_message_t *m, cJSON *input,
                            char *err, size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, API);
    /* Item ids go back only beside the reasoning items they pair with: OpenAI refuses an item
     * whose id says it followed reasoning when that reasoning is not sent (compaction drops an
     * earlier turn's), and reasoning without the item after it. Without ids it checks neither. */
    bool ids = false;
    for (size_t k = 0; same && k < m->n_parts && !ids; k++)
        ids = m->parts[k].type == MG_IR_PART_REASONING && (m->parts[k].id || m->parts[k].encrypted);
    for (size_t k = 0; k < m->n_parts; k++) {
        const mg_ir_part_t *p = &m->parts[k];
        if (p->type == MG_IR_PART_TEXT && ids && p->item_id) {
            /* The client's own message item, with its id: OpenAI links a reasoning item to the
             * item after it by id, and refuses the reasoning when that item comes without one
             * ("provided without its required following item"). Written as the output message
             * it was, its texts together (annotations and status are required in that shape by
             * strict servers). */
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "message");
            cJSON_AddStringToObject(o, "id", p->item_id);
            cJSON_AddStringToObject(o, "role", "assistant");
            cJSON_AddStringToObject(o, "status", "completed");
            cJSON *content = cJSON_AddArrayToObject(o, "content");
            size_t q = k;
            while (q < m->n_parts && same_item(p, &m->parts[q])) {
                cJSON *c = mg_codec_text_json("output_text", m->parts[q].text ? m->parts[q].text : "");
                cJSON_AddArrayToObject(c, "annotations");
                cJSON_AddItemToArray(content, c);
                q++;
            }
            k = q - 1; /* the last text of the item */
            cJSON_AddItemToArray(input, o);
        } else if (p->type == MG_IR_PART_TEXT) {
            /* One message item per text: the decoder reads consecutive items back as one turn. */
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "role", "assistant");
            cJSON_AddStringToObject(o, "content", p->text ? p->text : "");
            cJSON_AddItemToArray(input, o);
        } else if (p->type == MG_IR_PART_TOOL_CALL) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "function_call");
            if (ids && p->item_id) cJSON_AddStringToObject(o, "id", p->item_id); /* as for messages */
            cJSON_AddStringToObject(o, "call_id", p->id ? p->id : "");
            cJSON_AddStringToObject(o, "name", p->name ? p->name : "");
            cJSON_AddStringToObject(o, "arguments", p->arguments ? p->arguments : "{}");
            cJSON_AddItemToArray(input, o);
        } else if (p->type == MG_IR_PART_REASONING) {
            /* Reasoning items mean something only to the Responses server that made them. */
            if (!same || (!p->id && !p->encrypted)) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "reasoning");
            if (p->id) cJSON_AddStringToObject(o, "id", p->id);
            cJSON *sum = cJSON_AddArrayToObject(o, "summary");
            if (p->text && *p->text) cJSON_AddItemToArray(sum, summary_part(p->text));
            if (p->encrypted) cJSON_AddStringToObject(o, "encrypted_content", p->encrypted);
            cJSON_AddItemToArray(input, o);
        } else if (p->type == MG_IR_PART_OPAQUE) {
            if (!same) return mg_codec_opaque_fail(p, API, err, errlen);
            cJSON_AddItemToArray(input, cJSON_Duplicate(p->raw, true));
        } else if (p->type == MG_IR_PART_IMAGE) {
            continue; /* an assistant cannot send images */
        }
    }
    return 0;
}

/* One function_call_output item per result: its output its texts joined, or, with images or
 * parts kept raw (input_file: a Responses client's own, mg_codec_check_result refused them for
 * any other), the parts as an array. 0, or -1 with err. */
static int encode_tool_results(const mg_ir_request_t *ir, const mg_ir_message_t *m, cJSON *input, char *err,
                               size_t errlen)
{
    for (size_t k = 0; k < m->n_parts; k++) {
        const mg_ir_part_t *p = &m->parts[k];
        if (p->type != MG_IR_PART_TOOL_RESULT) continue;
        if (mg_codec_check_result(ir, p, API, err, errlen)) return -1;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function_call_output");
        cJSON_AddStringToObject(o, "call_id", p->id ? p->id : "");
        if (mg_codec_has_image(p->parts, p->n_parts) || mg_codec_has_opaque(p->parts, p->n_parts)) {
            cJSON *arr = cJSON_AddArrayToObject(o, "output");
            for (size_t q = 0; q < p->n_parts; q++) {
                const mg_ir_part_t *c = &p->parts[q];
                if (c->type == MG_IR_PART_TEXT) cJSON_AddItemToArray(arr, input_text_json(c->text));
                else if (c->type == MG_IR_PART_IMAGE) cJSON_AddItemToArray(arr, image_json(c));
                else if (c->type == MG_IR_PART_OPAQUE) cJSON_AddItemToArray(arr, cJSON_Duplicate(c->raw, true));
            }
        } else {
            mg_codec_add_joined(o, "output", p->parts, p->n_parts);
        }
        cJSON_AddItemToArray(input, o);
    }
    return 0;
}

static cJSON *tool_json(const mg_ir_tool_t *t, bool same)
{
    cJSON *tj = cJSON_CreateObject();
    cJSON_AddStringToObject(tj, "type", "function");
    mg_codec_add_tool_fields(tj, t, "parameters");
    /* Responses makes function tools strict by default; other APIs do not. */
    if (t->strict >= 0) cJSON_AddBoolToObject(tj, "strict", t->strict);
    else if (!same) cJSON_AddBoolToObject(tj, "strict", false);
    return tj;
}

cJSON *mg_openai_responses_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                          char *err, size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, API);
    if (ir->n > 1) {
        mg_ir_fail(err, errlen, "n > 1 cannot be sent to %s", mg_api_name(API));
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", opts && opts->model ? opts->model : ir->model ? ir->model : "");
    if (ir->n_system) mg_codec_add_joined(o, "instructions", ir->system, ir->n_system);
    cJSON *input = cJSON_AddArrayToObject(o, "input");
    for (size_t i = 0; i < ir->n_messages; i++) {
        const mg_ir_message_t *m = &ir->messages[i];
        int rc = 0;
        if (m->role == MG_IR_USER) {
            /* Tool results a decoder left in a user message go first, as their own items. */
            if ((rc = encode_tool_results(ir, m, input, err, errlen))) goto error;
            mg_ir_message_t rest = *m;
            mg_ir_part_t *kept = NULL;
            size_t n = 0;
            for (size_t k = 0; k < m->n_parts; k++)
                if (m->parts[k].type != MG_IR_PART_TOOL_RESULT) n++;
            if (n != m->n_parts) {
                kept = mg_xcalloc(n ? n : 1, sizeof *kept);
                n = 0;
                for (size_t k = 0; k < m->n_parts; k++)
                    if (m->parts[k].type != MG_IR_PART_TOOL_RESULT) kept[n++] = m->parts[k];
                rest.parts = kept;
                rest.n_parts = n;
            }
            if (rest.n_parts) rc = encode_user(ir, &rest, input, err, errlen);
            free(kept);
        } else if (m->role == MG_IR_ASSISTANT) {
            rc = encode_assistant(ir, m, input, err, errlen);
        } else {
            rc = encode_tool_results(ir, m, input, err, errlen);
        }
        if (rc) goto error;
    }
    if (ir->n_tools) {
        if (mg_codec_encode_tools(o, ir, API, tool_json, err, errlen)) goto error;
        if (ir->parallel_tool_calls >= 0) cJSON_AddBoolToObject(o, "parallel_tool_calls", ir->parallel_tool_calls);
    }
    cJSON *named = mg_codec_openai_tool_choice_json(o, ir->tool_choice);
    if (named) cJSON_AddStringToObject(named, "name", ir->tool_choice_name);
    /* OpenAI refuses max_output_tokens under 16 (integer_below_min_value): another API's smaller
     * limit (Claude Code's max_tokens 1 probe) is raised to it. */
    if (ir->max_output_tokens >= 0)
        mg_ir_add_int(o, "max_output_tokens", same || ir->max_output_tokens >= 16 ? ir->max_output_tokens : 16);
    if (ir->has_temperature) cJSON_AddNumberToObject(o, "temperature", ir->temperature);
    if (ir->has_top_p) cJSON_AddNumberToObject(o, "top_p", ir->top_p);
    mg_ir_effort_t eff = mg_ir_request_effort(ir);
    if (eff == MG_IR_EFFORT_UNSET) eff = ir->output_effort;
    if ((eff != MG_IR_EFFORT_UNSET && (eff != MG_IR_EFFORT_NONE || same)) || (same && ir->reasoning_summary)) {
        cJSON *rj = cJSON_AddObjectToObject(o, "reasoning");
        if (eff != MG_IR_EFFORT_UNSET) cJSON_AddStringToObject(rj, "effort", mg_ir_effort_name(eff));
        /* A client of another API that asked for reasoning wants to see it: ask for summaries. */
        if (ir->reasoning_summary) cJSON_AddStringToObject(rj, "summary", ir->reasoning_summary);
        else if (!same && eff != MG_IR_EFFORT_NONE) cJSON_AddStringToObject(rj, "summary", "auto");
    }
    if (ir->user) cJSON_AddStringToObject(o, "user", ir->user);
    if (ir->previous_response_id) cJSON_AddStringToObject(o, "previous_response_id", ir->previous_response_id);
    if (ir->format != MG_IR_FORMAT_UNSET && !(same && cJSON_GetObjectItemCaseSensitive(ir->extras, "text"))) {
        cJSON *fmt = cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, "text"), "format");
        if (ir->format == MG_IR_FORMAT_JSON_SCHEMA) {
            cJSON_AddStringToObject(fmt, "type", "json_schema");
            mg_codec_add_format_schema(fmt, ir);
        } else {
            cJSON_AddStringToObject(fmt, "type", ir->format == MG_IR_FORMAT_TEXT ? "text" : "json_object");
        }
    }
    if (ir->stream) cJSON_AddBoolToObject(o, "stream", true);
    if (same) mg_ir_copy_extras(o, ir);
    return o;
error:
    cJSON_Delete(o);
    return NULL;
}

/* ---- whole responses ---- */

/* A function_call item's id for the model: its call_id, else its item id, else a made-up one
 * (mg_codec_new_call_id: unique across answers, so that several calls without ids stay apart and
 * no later answer repeats one), which *made then holds (the caller frees it). */
static const char *call_id(const cJSON *item, char **made)
{
    const char *id = mg_ir_jstr(item, "call_id");
    if (!id || !*id) id = mg_ir_jstr(item, "id");
    *made = id && *id ? NULL : mg_codec_new_call_id("call_");
    return *made ? *made : id;
}

int mg_openai_responses_decode_response(const cJSON *body, mg_ir_arena_t *a,
                                        const mg_ir_decode_opts_t *opts, mg_ir_response_t *out,
                                        char *err, size_t errlen)
{
    (void)opts;
    memset(out, 0, sizeof *out);
    out->usage = MG_IR_USAGE_UNKNOWN;
    mg_ir_error_t e;
    const cJSON *rerr = mg_ir_jget(body, "error");
    if (cJSON_IsObject(rerr)) {
        const char *m = mg_ir_jstr(rerr, "message");
        return mg_ir_fail(err, errlen, "upstream error: %s", m ? m : "(no message)");
    }
    if (!rerr && mg_ir_error_from_json(body, 0, &e)) return mg_ir_fail(err, errlen, "upstream error: %s", e.message);
    const char *status = mg_ir_jstr(body, "status");
    if (status && strcmp(status, "failed") == 0) return mg_ir_fail(err, errlen, "upstream error: the response failed");
    const cJSON *output = mg_ir_jget(body, "output");
    if (!cJSON_IsArray(output)) return mg_ir_fail(err, errlen, "the answer has no output array");
    out->id = mg_ir_jstr(body, "id");
    out->model = mg_ir_jstr(body, "model");
    out->created = mg_ir_jint(body, "created_at", 0);
    mg_ir_parts_t pv = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, output)
    {
        const char *type = mg_ir_jstr(it, "type");
        if (!type) continue;
        if (strcmp(type, "reasoning") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING);
            p->id = mg_ir_jstr(it, "id");
            p->text = reasoning_text(a, it);
            p->encrypted = mg_ir_jstr(it, "encrypted_content");
        } else if (strcmp(type, "message") == 0) {
            const cJSON *c;
            const cJSON *content = mg_ir_jget(it, "content");
            cJSON_ArrayForEach(c, mg_ir_arr(content))
            {
                const char *ct = mg_ir_jstr(c, "type");
                bool refusal = ct && strcmp(ct, "refusal") == 0;
                const char *t = mg_ir_jstr(c, refusal ? "refusal" : "text");
                if (!t) continue;
                mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TEXT);
                p->text = t;
                p->refusal = refusal;
            }
        } else if (strcmp(type, "function_call") == 0) {
            mg_ir_part_t *p = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_CALL);
            char *made;
            p->id = mg_ir_strdup(a, call_id(it, &made)); /* as the stream decoder names it */
            free(made);
            p->name = mg_codec_jtext(it, "name");
            const char *args = mg_ir_jstr(it, "arguments");
            p->arguments = args && *args ? args : "{}";
        }
    }
    out->parts = pv.v;
    out->n_parts = pv.n;
    out->finish = finish_from_response(body);
    const cJSON *u = mg_ir_jget(body, "usage");
    if (cJSON_IsObject(u)) out->usage = usage_from_json(u);
    return 0;
}

/* Item ids derive from the response id and the output index, so the stream's items and the
 * final output of response.completed agree. */
static char *item_id(const char *resp_id, const char *prefix, int index)
{
    const char *base = resp_id;
    if (strncmp(base, "resp_", 5) == 0) base += 5;
    return mg_xasprintf("%s_%s_%d", prefix, base, index);
}

static char *response_id(const char *opt_id, const char *up_id, bool keep_upstream_id)
{
    return mg_codec_answer_id(keep_upstream_id ? "" : "resp_", opt_id, up_id, "resp_moongate");
}

/* A refusal part, in a message item instead of output_text: what clients check before they
 * parse the text as the answer (the SDK's parse() leaves output_parsed null). */
static cJSON *refusal_part(const char *text)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "refusal");
    cJSON_AddStringToObject(c, "refusal", text ? text : "");
    return c;
}

static cJSON *output_text_part(const char *text)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "output_text");
    cJSON_AddStringToObject(c, "text", text ? text : "");
    cJSON_AddArrayToObject(c, "annotations");
    cJSON_AddArrayToObject(c, "logprobs");
    return c;
}

/* One finished output item. */
static cJSON *item_json(const mg_ir_part_t *p, const char *resp_id, int index)
{
    cJSON *o = cJSON_CreateObject();
    char *id;
    if (p->type == MG_IR_PART_REASONING) {
        id = item_id(resp_id, "rs", index);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "type", "reasoning");
        cJSON *sum = cJSON_AddArrayToObject(o, "summary");
        if (p->text && *p->text) cJSON_AddItemToArray(sum, summary_part(p->text));
        if (p->encrypted) cJSON_AddStringToObject(o, "encrypted_content", p->encrypted);
    } else if (p->type == MG_IR_PART_TOOL_CALL) {
        id = item_id(resp_id, "fc", index);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "type", "function_call");
        cJSON_AddStringToObject(o, "status", "completed");
        cJSON_AddStringToObject(o, "call_id", p->id ? p->id : "");
        cJSON_AddStringToObject(o, "name", p->name ? p->name : "");
        cJSON_AddStringToObject(o, "arguments", p->arguments ? p->arguments : "{}");
    } else {
        id = item_id(resp_id, "msg", index);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "type", "message");
        cJSON_AddStringToObject(o, "status", "completed");
        cJSON_AddStringToObject(o, "role", "assistant");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "content"),
                             p->refusal ? refusal_part(p->text) : output_text_part(p->text));
    }
    free(id);
    return o;
}

/* The Response object's members that repeat a request parameter (A.2): an answer translated
 * from another API shows what the client asked for, as OpenAI's own answers do. */
static const char *const echoed_fields[] = {
    "instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "reasoning", "temperature",
    "text",         "tool_choice",       "tools",    "top_p",               "truncation", "user",
};

/* Adds req's member key to o as the client sent it; false (nothing added) when it is absent or
 * null, for the caller to add the API's default. */
static bool echo(cJSON *o, const cJSON *req, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
    if (!v || cJSON_IsNull(v)) return false;
    cJSON_AddItemToObject(o, key, cJSON_Duplicate(v, true));
    return true;
}

/* text: the request's (verbosity and all), with the default format when it named none. */
static void add_text_echo(cJSON *o, const cJSON *req)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(req, "text");
    cJSON *text = cJSON_IsObject(t) ? cJSON_Duplicate(t, true) : cJSON_CreateObject();
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(text, "format");
    if (!fmt || cJSON_IsNull(fmt)) {
        cJSON_DeleteItemFromObjectCaseSensitive(text, "format");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(text, "format"), "type", "text");
    }
    cJSON_AddItemToObject(o, "text", text);
}

/* The response object: r NULL gives the in-progress shell (no output, usage null); req the
 * client's request (or its echoed_fields), whose parameters it repeats; NULL: the defaults. */
static cJSON *response_json(const char *id, int64_t created, const char *model, const mg_ir_response_t *r,
                            bool strip, const mg_ir_error_t *failure, const cJSON *req)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "response");
    mg_ir_add_int(o, "created_at", created);
    bool tools = false;
    for (size_t i = 0; r && i < r->n_parts; i++)
        tools |= r->parts[i].type == MG_IR_PART_TOOL_CALL;
    const char *incomplete = r && !failure ? incomplete_reason(mg_ir_effective_finish(r->finish, tools)) : NULL;
    cJSON_AddStringToObject(o, "status", failure ? "failed" : !r ? "in_progress" : incomplete ? "incomplete" : "completed");
    if (failure) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "code", mg_ir_error_code(failure));
        cJSON_AddStringToObject(e, "message", failure->message ? failure->message : "error");
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    if (incomplete) cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "incomplete_details"), "reason", incomplete);
    else cJSON_AddNullToObject(o, "incomplete_details");
    if (!echo(o, req, "instructions")) cJSON_AddNullToObject(o, "instructions");
    if (!echo(o, req, "max_output_tokens")) cJSON_AddNullToObject(o, "max_output_tokens");
    cJSON_AddStringToObject(o, "model", model);
    cJSON *output = cJSON_AddArrayToObject(o, "output");
    int index = 0;
    for (size_t i = 0; r && i < r->n_parts; i++) {
        const mg_ir_part_t *p = &r->parts[i];
        if (p->type == MG_IR_PART_REASONING && strip) continue;
        if (p->type != MG_IR_PART_REASONING && p->type != MG_IR_PART_TEXT && p->type != MG_IR_PART_TOOL_CALL) continue;
        cJSON_AddItemToArray(output, item_json(p, id, index++));
    }
    if (!echo(o, req, "parallel_tool_calls")) cJSON_AddBoolToObject(o, "parallel_tool_calls", true);
    cJSON_AddNullToObject(o, "previous_response_id");
    cJSON *rs = cJSON_AddObjectToObject(o, "reasoning");
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(req, "reasoning");
    if (!echo(rs, rq, "effort")) cJSON_AddNullToObject(rs, "effort");
    if (!echo(rs, rq, "summary")) cJSON_AddNullToObject(rs, "summary");
    cJSON_AddBoolToObject(o, "store", false); /* nothing translated is stored */
    if (!echo(o, req, "temperature")) cJSON_AddNumberToObject(o, "temperature", 1);
    add_text_echo(o, req);
    if (!echo(o, req, "tool_choice")) cJSON_AddStringToObject(o, "tool_choice", "auto");
    if (!echo(o, req, "tools")) cJSON_AddArrayToObject(o, "tools");
    if (!echo(o, req, "top_p")) cJSON_AddNumberToObject(o, "top_p", 1);
    if (!echo(o, req, "truncation")) cJSON_AddStringToObject(o, "truncation", "disabled");
    echo(o, req, "user"); /* deprecated: shown only when the client sent one */
    if (r && !failure && (r->usage.input >= 0 || r->usage.output >= 0)) cJSON_AddItemToObject(o, "usage", usage_to_json(&r->usage));
    else cJSON_AddNullToObject(o, "usage");
    if (!echo(o, req, "metadata")) cJSON_AddObjectToObject(o, "metadata");
    return o;
}

cJSON *mg_openai_responses_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts)
{
    char *id = response_id(opts->id, r->id, opts->keep_upstream_id);
    cJSON *o = response_json(id, mg_ir_created(opts, r->created), mg_ir_model_shown(opts, r->model),
                             r, opts->strip_reasoning, NULL, opts->request);
    free(id);
    return o;
}

char *mg_openai_responses_encode_error(int status, const char *type, const char *code, const char *message)
{
    return mg_codec_openai_error(API, status, type, code, message);
}

/* ---- stream decoder ---- */

enum { IT_OTHER, IT_REASONING, IT_MESSAGE, IT_CALL };
#define MAX_ITEMS 4096 /* an output_index past this is ignored (fuzzed input) */

typedef struct resp_item {
    uint8_t kind;
    bool emitted; /* some content of it went out as deltas */
    int tool;     /* IT_CALL: the tool-call ordinal */
    int summary;  /* IT_REASONING: the last summary_index seen */
} resp_item_t;

typedef struct resp_dec {
    bool started, ended;
    bool saw_item; /* an output_item.added arrived */
    resp_item_t *items;
    int cap;
    int n_tools;
} resp_dec_t;

void *mg_openai_responses_decoder_new(const mg_ir_decode_opts_t *opts)
{
    (void)opts;
    return mg_xcalloc(1, sizeof(resp_dec_t));
}

void mg_openai_responses_decoder_free(void *st)
{
    resp_dec_t *d = st;
    if (!d) return;
    free(d->items);
    free(d);
}

/* The item at output_index, created on demand; NULL when the index is unusable. */
static resp_item_t *item_at(resp_dec_t *d, const cJSON *j, bool create)
{
    int64_t i = mg_ir_jint(j, "output_index", -1);
    if (i < 0 || i >= MAX_ITEMS) return NULL;
    if (i >= d->cap) {
        if (!create) return NULL;
        int ncap = d->cap ? d->cap : 8;
        while (ncap <= i)
            ncap *= 2;
        d->items = mg_xrealloc(d->items, (size_t)ncap * sizeof *d->items);
        memset(d->items + d->cap, 0, (size_t)(ncap - d->cap) * sizeof *d->items);
        d->cap = ncap;
    }
    return &d->items[i];
}

static int delta(mg_ir_event_type_t type, const char *s, int index, resp_item_t *it, mg_ir_event_cb cb, void *ud)
{
    if (!s || !*s) return 0;
    if (it) it->emitted = true;
    return mg_codec_emit_text(type, s, index, cb, ud);
}

static int refusal_delta(const char *s, resp_item_t *it, mg_ir_event_cb cb, void *ud)
{
    if (!s || !*s) return 0;
    it->emitted = true;
    return mg_codec_emit_refusal(s, cb, ud);
}

/* The kind of an output item of this type (NULL: IT_OTHER). */
static int item_kind(const char *type)
{
    if (!type) return IT_OTHER;
    if (strcmp(type, "reasoning") == 0) return IT_REASONING;
    if (strcmp(type, "message") == 0) return IT_MESSAGE;
    if (strcmp(type, "function_call") == 0) return IT_CALL;
    return IT_OTHER;
}

/* Content an item carried only in its .done form (servers that skip the deltas). */
static int late_content(resp_item_t *it, const cJSON *item, mg_ir_event_cb cb, void *ud)
{
    if (it->emitted) return 0;
    int rc = 0;
    if (it->kind == IT_CALL) {
        rc = delta(MG_IR_EV_TOOL_CALL_DELTA, mg_ir_jstr(item, "arguments"), it->tool, it, cb, ud);
    } else if (it->kind == IT_MESSAGE) {
        const cJSON *content = mg_ir_jget(item, "content"), *c;
        cJSON_ArrayForEach(c, mg_ir_arr(content))
        {
            const char *t = mg_ir_jstr(c, "text");
            rc = t ? delta(MG_IR_EV_TEXT_DELTA, t, 0, it, cb, ud) : refusal_delta(mg_ir_jstr(c, "refusal"), it, cb, ud);
            if (rc) break;
        }
    } else if (it->kind == IT_REASONING) {
        mg_ir_arena_t *a = mg_ir_arena_new();
        rc = delta(MG_IR_EV_REASONING_DELTA, reasoning_text(a, item), 0, it, cb, ud);
        mg_ir_arena_free(a);
    }
    return rc;
}

static int on_item_added(resp_dec_t *d, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    resp_item_t *it = item_at(d, j, true);
    if (!it) return 0;
    d->saw_item = true;
    const cJSON *item = mg_ir_jget(j, "item");
    memset(it, 0, sizeof *it);
    it->kind = (uint8_t)item_kind(mg_ir_jstr(item, "type"));
    if (it->kind == IT_CALL) {
        it->tool = d->n_tools++;
        char *made;
        mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_START, .index = it->tool, .id = call_id(item, &made),
                            .name = mg_codec_jtext(item, "name")};
        int rc = cb(ud, &ev);
        free(made);
        if (rc) return rc;
        return delta(MG_IR_EV_TOOL_CALL_DELTA, mg_ir_jstr(item, "arguments"), it->tool, it, cb, ud);
    }
    return 0;
}

static int on_terminal(resp_dec_t *d, const char *type, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    const cJSON *resp = mg_ir_jget(j, "response");
    if (strcmp(type, "response.failed") == 0) {
        mg_ir_error_t e;
        if (!mg_ir_error_from_json(j, 0, &e)) e = (mg_ir_error_t){500, "server_error", NULL, "the response failed"};
        return mg_codec_emit_error(&d->ended, &e, cb, ud);
    }
    if (!d->saw_item) {
        /* A server that streamed no items: the output is only in the final response. */
        const cJSON *output = mg_ir_jget(resp, "output"), *item;
        cJSON_ArrayForEach(item, mg_ir_arr(output))
        {
            resp_item_t it = {.kind = (uint8_t)item_kind(mg_ir_jstr(item, "type"))};
            if (it.kind == IT_CALL) {
                it.tool = d->n_tools++;
                char *made;
                mg_ir_event_t ev = {.type = MG_IR_EV_TOOL_CALL_START, .index = it.tool, .id = call_id(item, &made),
                                    .name = mg_codec_jtext(item, "name")};
                int rc = cb(ud, &ev);
                free(made);
                if (rc) return rc;
            }
            if (it.kind == IT_OTHER) continue;
            int rc = late_content(&it, item, cb, ud);
            if (rc) return rc;
            mg_ir_event_t be = {.type = MG_IR_EV_BLOCK_END};
            MG_CODEC_EMIT(be);
        }
    }
    const cJSON *u = mg_ir_jget(resp, "usage");
    if (cJSON_IsObject(u)) {
        mg_ir_event_t ev = {.type = MG_IR_EV_USAGE, .usage = usage_from_json(u)};
        MG_CODEC_EMIT(ev);
    }
    mg_ir_event_t fin = {.type = MG_IR_EV_FINISH, .finish = finish_from_response(resp)};
    if (strcmp(type, "response.incomplete") == 0 && fin.finish == MG_IR_FINISH_STOP) fin.finish = MG_IR_FINISH_LENGTH;
    MG_CODEC_EMIT(fin);
    return mg_codec_emit_end(&d->ended, cb, ud);
}

static int dec_event(resp_dec_t *d, const char *type, const cJSON *j, mg_ir_event_cb cb, void *ud)
{
    if (strcmp(type, "error") == 0) {
        mg_ir_error_t e;
        if (!mg_ir_error_from_json(j, 0, &e)) e = (mg_ir_error_t){500, "server_error", NULL, "upstream error"};
        return mg_codec_emit_error(&d->ended, &e, cb, ud);
    }
    if (!d->started && strncmp(type, "response.", 9) == 0) {
        d->started = true;
        const cJSON *resp = mg_ir_jget(j, "response");
        mg_ir_event_t ev = {.type = MG_IR_EV_START, .id = mg_ir_jstr(resp, "id"), .model = mg_ir_jstr(resp, "model"),
                            .created = mg_ir_jint(resp, "created_at", 0), .usage = MG_IR_USAGE_UNKNOWN};
        MG_CODEC_EMIT(ev);
    }
    if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
        strcmp(type, "response.failed") == 0)
        return on_terminal(d, type, j, cb, ud);
    if (strcmp(type, "response.output_item.added") == 0) return on_item_added(d, j, cb, ud);
    resp_item_t *it = item_at(d, j, false);
    if (!it) return 0;
    if (strcmp(type, "response.reasoning_summary_part.added") == 0) {
        /* Summary parts are paragraphs: keep them apart in the one reasoning text. */
        int64_t si = mg_ir_jint(j, "summary_index", 0);
        int rc = 0;
        if (si > it->summary && it->emitted) rc = delta(MG_IR_EV_REASONING_DELTA, "\n\n", 0, it, cb, ud);
        it->summary = (int)MG_MIN(si, 1 << 20);
        return rc;
    }
    if (strcmp(type, "response.reasoning_summary_text.delta") == 0 || strcmp(type, "response.reasoning_text.delta") == 0)
        return it->kind == IT_REASONING ? delta(MG_IR_EV_REASONING_DELTA, mg_ir_jstr(j, "delta"), 0, it, cb, ud) : 0;
    if (strcmp(type, "response.output_text.delta") == 0)
        return it->kind == IT_MESSAGE ? delta(MG_IR_EV_TEXT_DELTA, mg_ir_jstr(j, "delta"), 0, it, cb, ud) : 0;
    if (strcmp(type, "response.refusal.delta") == 0)
        return it->kind == IT_MESSAGE ? refusal_delta(mg_ir_jstr(j, "delta"), it, cb, ud) : 0;
    if (strcmp(type, "response.function_call_arguments.delta") == 0)
        return it->kind == IT_CALL ? delta(MG_IR_EV_TOOL_CALL_DELTA, mg_ir_jstr(j, "delta"), it->tool, it, cb, ud) : 0;
    if (strcmp(type, "response.function_call_arguments.done") == 0)
        return it->kind == IT_CALL && !it->emitted
                   ? delta(MG_IR_EV_TOOL_CALL_DELTA, mg_ir_jstr(j, "arguments"), it->tool, it, cb, ud)
                   : 0;
    if (strcmp(type, "response.output_item.done") == 0) {
        if (it->kind == IT_OTHER) return 0;
        int rc = late_content(it, mg_ir_jget(j, "item"), cb, ud);
        if (rc) return rc;
        it->kind = IT_OTHER; /* done: later events for it are ignored */
        mg_ir_event_t ev = {.type = MG_IR_EV_BLOCK_END};
        return cb(ud, &ev);
    }
    return 0; /* in_progress, part added/done, .done texts, keepalive, built-in tool progress */
}

int mg_openai_responses_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                                     size_t data_len, mg_ir_event_cb cb, void *ud)
{
    resp_dec_t *d = st;
    if (d->ended) return 0;
    cJSON *j = mg_ir_parse_text(data, data_len);
    char tbuf[96];
    const char *t = mg_ir_event_type(j, type, type_len, tbuf, sizeof tbuf);
    int rc = 0;
    if (j) {
        rc = dec_event(d, t, j, cb, ud);
    } else if (strcmp(t, "error") == 0) {
        rc = mg_codec_emit_raw_error(&d->ended, "server_error", data, data_len, cb, ud);
    }
    cJSON_Delete(j);
    return rc;
}

int mg_openai_responses_decoder_finish(void *st, mg_ir_event_cb cb, void *ud)
{
    resp_dec_t *d = st;
    if (d->ended) return 0;
    return mg_codec_emit_truncated(&d->ended, "server_error", cb, ud);
}

/* ---- stream encoder ---- */

typedef struct resp_enc {
    char *opt_id, *opt_model, *default_model;
    bool keep_id; /* mg_ir_output_opts_t.keep_upstream_id */
    char *id, *model;
    int64_t created;
    bool strip;
    bool started, done;
    int64_t seq;
    int open;       /* IT_OTHER (= none), IT_REASONING, IT_MESSAGE, IT_CALL */
    bool open_refusal; /* the open message's part is a refusal, not output_text */
    int open_index; /* output_index of the open item */
    int open_tool;
    size_t open_args;
    char *open_id;
    char *call_id, *call_name;
    int next_index;
    mg_ir_collector_t col; /* what went out, for the .done events and response.completed */
    cJSON *echo;           /* the request's echoed_fields, for every response object */
    mg_buf_t scratch;
} resp_enc_t;

void *mg_openai_responses_encoder_new(const mg_ir_output_opts_t *opts)
{
    resp_enc_t *e = mg_xcalloc(1, sizeof *e);
    e->opt_id = opts->id ? mg_xstrdup(opts->id) : NULL;
    e->keep_id = opts->keep_upstream_id;
    e->opt_model = opts->model ? mg_xstrdup(opts->model) : NULL;
    e->default_model = opts->default_model ? mg_xstrdup(opts->default_model) : NULL;
    e->created = opts->created;
    e->strip = opts->strip_reasoning;
    e->open_tool = -1;
    mg_ir_collector_init(&e->col);
    e->echo = cJSON_CreateObject();
    for (size_t i = 0; opts->request && i < MG_ARRAY_LEN(echoed_fields); i++)
        echo(e->echo, opts->request, echoed_fields[i]);
    return e;
}

void mg_openai_responses_encoder_free(void *st)
{
    resp_enc_t *e = st;
    if (!e) return;
    free(e->opt_id);
    free(e->opt_model);
    free(e->default_model);
    free(e->id);
    free(e->model);
    free(e->open_id);
    free(e->call_id);
    free(e->call_name);
    mg_ir_collector_free(&e->col);
    mg_buf_free(&e->scratch);
    cJSON_Delete(e->echo);
    free(e);
}

bool mg_openai_responses_encoder_done(const void *st)
{
    return ((const resp_enc_t *)st)->done;
}

/* Adds "sequence_number" and writes the frame; takes ownership of j. */
static void send(resp_enc_t *e, cJSON *j, mg_buf_t *out)
{
    const char *type = mg_ir_jstr(j, "type");
    mg_ir_add_int(j, "sequence_number", e->seq++);
    mg_ir_sse_json(out, type, j);
    cJSON_Delete(j);
}

static cJSON *ev_json(const char *type)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", type);
    return j;
}

/* An event about the open item: type, item_id, output_index and, when index_key is set,
 * index_key 0 (the one summary or content part an item has). */
static cJSON *item_ev(const resp_enc_t *e, const char *type, const char *index_key)
{
    cJSON *j = ev_json(type);
    cJSON_AddStringToObject(j, "item_id", e->open_id);
    mg_ir_add_int(j, "output_index", e->open_index);
    if (index_key) mg_ir_add_int(j, index_key, 0);
    return j;
}

/* Hot path: a delta event written directly. */
static void send_delta(resp_enc_t *e, const char *type, const char *extra, const char *s, size_t n, mg_buf_t *out)
{
    mg_buf_t *b = &e->scratch;
    mg_buf_reset(b);
    mg_buf_puts(b, "{\"type\":\"");
    mg_buf_puts(b, type);
    mg_buf_puts(b, "\",\"item_id\":");
    mg_buf_json_str(b, e->open_id);
    mg_buf_puts(b, ",\"output_index\":");
    mg_ir_buf_int(b, e->open_index);
    mg_buf_puts(b, extra);
    mg_buf_puts(b, ",\"delta\":");
    mg_buf_json_strn(b, s, n);
    if (e->open == IT_MESSAGE && !e->open_refusal) mg_buf_puts(b, ",\"logprobs\":[]");
    mg_buf_puts(b, ",\"sequence_number\":");
    mg_ir_buf_int(b, e->seq++);
    mg_buf_puts(b, "}");
    mg_ir_sse_frame(out, type, b->data, b->len);
}

static void enc_start(resp_enc_t *e, const mg_ir_event_t *ev, mg_buf_t *out)
{
    if (e->started) return;
    e->started = true;
    e->id = response_id(e->opt_id, ev ? ev->id : NULL, e->keep_id);
    mg_ir_output_opts_t mo = {.model = e->opt_model, .default_model = e->default_model};
    e->model = mg_xstrdup(mg_ir_model_shown(&mo, ev ? ev->model : NULL));
    mg_ir_output_opts_t o = {.created = e->created};
    e->created = mg_ir_created(&o, ev ? ev->created : 0);
    mg_ir_event_t sev = {.type = MG_IR_EV_START, .id = e->id, .model = e->model, .created = e->created};
    mg_ir_collector_push(&e->col, &sev);
    /* The SDK accumulator refuses anything before response.created (B.5.6). */
    const char *types[2] = {"response.created", "response.in_progress"};
    for (int i = 0; i < 2; i++) {
        cJSON *j = ev_json(types[i]);
        cJSON_AddItemToObject(j, "response", response_json(e->id, e->created, e->model, NULL, false, NULL, e->echo));
        send(e, j, out);
    }
}

static const mg_ir_cpart_t *open_part(const resp_enc_t *e)
{
    return e->col.n_parts ? &e->col.parts[e->col.n_parts - 1] : NULL;
}

static void close_item(resp_enc_t *e, mg_buf_t *out)
{
    if (e->open == IT_OTHER) return;
    if (e->open == IT_CALL && e->open_args == 0) {
        /* A call without arguments gets "{}" so that parsing them works. */
        send_delta(e, "response.function_call_arguments.delta", "", "{}", 2, out);
        mg_ir_event_t dv = {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = e->open_tool, .text = "{}", .text_len = 2};
        mg_ir_collector_push(&e->col, &dv);
    }
    const mg_ir_cpart_t *cp = open_part(e);
    const char *text = cp && cp->text.data ? cp->text.data : "";
    cJSON *j;
    if (e->open == IT_REASONING) {
        j = item_ev(e, "response.reasoning_summary_text.done", "summary_index");
        cJSON_AddStringToObject(j, "text", text);
        send(e, j, out);
        j = item_ev(e, "response.reasoning_summary_part.done", "summary_index");
        cJSON_AddItemToObject(j, "part", summary_part(text));
        send(e, j, out);
    } else if (e->open == IT_MESSAGE && e->open_refusal) {
        j = item_ev(e, "response.refusal.done", "content_index");
        cJSON_AddStringToObject(j, "refusal", text);
        send(e, j, out);
        j = item_ev(e, "response.content_part.done", "content_index");
        cJSON_AddItemToObject(j, "part", refusal_part(text));
        send(e, j, out);
    } else if (e->open == IT_MESSAGE) {
        j = item_ev(e, "response.output_text.done", "content_index");
        cJSON_AddStringToObject(j, "text", text);
        cJSON_AddArrayToObject(j, "logprobs");
        send(e, j, out);
        j = item_ev(e, "response.content_part.done", "content_index");
        cJSON_AddItemToObject(j, "part", output_text_part(text));
        send(e, j, out);
    } else {
        j = item_ev(e, "response.function_call_arguments.done", NULL);
        cJSON_AddStringToObject(j, "arguments", text);
        send(e, j, out);
    }
    mg_ir_part_t p = {.type = e->open == IT_REASONING ? MG_IR_PART_REASONING
                              : e->open == IT_MESSAGE ? MG_IR_PART_TEXT
                                                      : MG_IR_PART_TOOL_CALL,
                      .text = text, .arguments = text, .id = e->call_id, .name = e->call_name,
                      .refusal = e->open_refusal};
    j = ev_json("response.output_item.done");
    mg_ir_add_int(j, "output_index", e->open_index);
    cJSON_AddItemToObject(j, "item", item_json(&p, e->id, e->open_index));
    send(e, j, out);
    e->open = IT_OTHER;
    e->open_tool = -1;
    mg_ir_event_t be = {.type = MG_IR_EV_BLOCK_END};
    mg_ir_collector_push(&e->col, &be);
}

static void open_item(resp_enc_t *e, int kind, const mg_ir_event_t *ev, mg_buf_t *out)
{
    close_item(e, out);
    e->open = kind;
    e->open_refusal = kind == IT_MESSAGE && ev->refusal;
    e->open_index = e->next_index++;
    free(e->open_id);
    e->open_id = item_id(e->id, kind == IT_REASONING ? "rs" : kind == IT_MESSAGE ? "msg" : "fc", e->open_index);
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "id", e->open_id);
    if (kind == IT_REASONING) {
        cJSON_AddStringToObject(item, "type", "reasoning");
        cJSON_AddArrayToObject(item, "summary");
    } else if (kind == IT_MESSAGE) {
        cJSON_AddStringToObject(item, "type", "message");
        cJSON_AddStringToObject(item, "status", "in_progress");
        cJSON_AddStringToObject(item, "role", "assistant");
        cJSON_AddArrayToObject(item, "content");
    } else {
        free(e->call_id);
        free(e->call_name);
        e->call_id = mg_xstrdup(ev->id ? ev->id : "");
        e->call_name = mg_xstrdup(ev->name ? ev->name : "");
        cJSON_AddStringToObject(item, "type", "function_call");
        cJSON_AddStringToObject(item, "status", "in_progress");
        cJSON_AddStringToObject(item, "call_id", e->call_id);
        cJSON_AddStringToObject(item, "name", e->call_name);
        cJSON_AddStringToObject(item, "arguments", "");
        e->open_tool = ev->index;
        e->open_args = 0;
    }
    cJSON *j = ev_json("response.output_item.added");
    mg_ir_add_int(j, "output_index", e->open_index);
    cJSON_AddItemToObject(j, "item", item);
    send(e, j, out);
    if (kind == IT_REASONING) {
        j = item_ev(e, "response.reasoning_summary_part.added", "summary_index");
        cJSON_AddItemToObject(j, "part", summary_part(""));
        send(e, j, out);
    } else if (kind == IT_MESSAGE) {
        j = item_ev(e, "response.content_part.added", "content_index");
        cJSON_AddItemToObject(j, "part", e->open_refusal ? refusal_part("") : output_text_part(""));
        send(e, j, out);
    }
}

static void enc_finish(resp_enc_t *e, mg_buf_t *out)
{
    close_item(e, out);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    mg_ir_collector_response(&e->col, a, &r);
    cJSON *resp = response_json(e->id, e->created, e->model, &r, false, NULL, e->echo);
    const char *status = mg_ir_jstr(resp, "status");
    cJSON *j = ev_json(status && strcmp(status, "incomplete") == 0 ? "response.incomplete" : "response.completed");
    cJSON_AddItemToObject(j, "response", resp);
    send(e, j, out);
    mg_ir_arena_free(a);
}

static void enc_error(resp_enc_t *e, const mg_ir_error_t *err, mg_buf_t *out)
{
    /* The flat fields are the published event schema; the nested `error` object (as first-party
     * servers send it) makes the SDK's stream reader throw an APIError rather than reject with the
     * bare event. Clients that read past it also get response.failed. */
    cJSON *j = ev_json("error");
    const char *code = mg_ir_error_code(err), *msg = err->message ? err->message : "error";
    cJSON_AddStringToObject(j, "code", code);
    cJSON_AddStringToObject(j, "message", msg);
    cJSON_AddNullToObject(j, "param");
    cJSON *nested = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(nested, "type", mg_ir_error_type(API, err->status ? err->status : 500, err->type));
    cJSON_AddStringToObject(nested, "code", code);
    cJSON_AddStringToObject(nested, "message", msg);
    cJSON_AddNullToObject(nested, "param");
    send(e, j, out);
    if (!e->started) return; /* response.failed needs response.created before it */
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    mg_ir_collector_response(&e->col, a, &r);
    j = ev_json("response.failed");
    cJSON_AddItemToObject(j, "response", response_json(e->id, e->created, e->model, &r, false, err, e->echo));
    send(e, j, out);
    mg_ir_arena_free(a);
}

void mg_openai_responses_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out)
{
    resp_enc_t *e = st;
    if (e->done) return;
    switch (ev->type) {
    case MG_IR_EV_START: enc_start(e, ev, out); break;
    case MG_IR_EV_REASONING_DELTA:
        if (e->strip || !ev->text_len) break;
        enc_start(e, NULL, out);
        if (e->open != IT_REASONING) open_item(e, IT_REASONING, ev, out);
        mg_ir_collector_push(&e->col, ev);
        send_delta(e, "response.reasoning_summary_text.delta", ",\"summary_index\":0", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_REASONING_SIGNATURE: break; /* Anthropic's; encrypted_content is not the same thing */
    case MG_IR_EV_TEXT_DELTA:
        if (!ev->text_len) break;
        enc_start(e, NULL, out);
        /* Text and refusal go in message items of their own, as the collector keeps them. */
        if (e->open != IT_MESSAGE || e->open_refusal != ev->refusal) open_item(e, IT_MESSAGE, ev, out);
        mg_ir_collector_push(&e->col, ev);
        send_delta(e, ev->refusal ? "response.refusal.delta" : "response.output_text.delta", ",\"content_index\":0",
                   ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_TOOL_CALL_START:
        enc_start(e, NULL, out);
        open_item(e, IT_CALL, ev, out);
        mg_ir_collector_push(&e->col, ev);
        break;
    case MG_IR_EV_TOOL_CALL_DELTA:
        /* Only the open call can grow; fragments of another (interleaving upstreams) are lost. */
        if (!ev->text_len || e->open != IT_CALL || e->open_tool != ev->index) break;
        mg_ir_collector_push(&e->col, ev);
        e->open_args += ev->text_len;
        send_delta(e, "response.function_call_arguments.delta", "", ev->text, ev->text_len, out);
        break;
    case MG_IR_EV_BLOCK_END: close_item(e, out); break;
    case MG_IR_EV_OPAQUE_BLOCK: break; /* nothing Responses can say of it */
    case MG_IR_EV_FINISH:
        close_item(e, out);
        mg_ir_collector_push(&e->col, ev);
        break;
    case MG_IR_EV_USAGE: mg_ir_collector_push(&e->col, ev); break;
    case MG_IR_EV_END:
        enc_start(e, NULL, out);
        enc_finish(e, out);
        e->done = true;
        break;
    case MG_IR_EV_ERROR:
        enc_error(e, &ev->error, out);
        e->done = true;
        break;
    }
}

const mg_ir_codec_t mg_openai_responses_codec = {
    .api = API,
    .name = "openai-responses",
    .decode_request = mg_openai_responses_decode_request,
    .encode_request = mg_openai_responses_encode_request,
    .decode_response = mg_openai_responses_decode_response,
    .encode_response = mg_openai_responses_encode_response,
    .encode_error = mg_openai_responses_encode_error,
    .decoder_new = mg_openai_responses_decoder_new,
    .decoder_feed = mg_openai_responses_decoder_feed,
    .decoder_finish = mg_openai_responses_decoder_finish,
    .decoder_free = mg_openai_responses_decoder_free,
    .encoder_new = mg_openai_responses_encoder_new,
    .encoder_push = mg_openai_responses_encoder_push,
    .encoder_done = mg_openai_responses_encoder_done,
    .encoder_free = mg_openai_responses_encoder_free,
};
