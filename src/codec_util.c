/* What the three codec files do alike. See codec_util.h for the contracts. */
#include "codec_util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* ---- decoding ---- */

const char *mg_codec_jtext(const cJSON *o, const char *key)
{
    const char *s = mg_ir_jstr(o, key);
    return s ? s : "";
}

const char *mg_codec_json_text(mg_ir_arena_t *a, const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    if (!s) abort(); /* cJSON fails only when allocation fails */
    const char *r = mg_ir_strdup(a, s);
    cJSON_free(s);
    return r;
}

int mg_codec_decode_content(const mg_codec_content_t *how, mg_ir_arena_t *a, const cJSON *content,
                            mg_ir_parts_t *pv, void *ud, char *err, size_t errlen)
{
    if (!content || cJSON_IsNull(content)) return 0;
    if (cJSON_IsString(content)) {
        mg_ir_parts_add(a, pv, MG_IR_PART_TEXT)->text = content->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(content)) return mg_ir_fail(err, errlen, "%s", how->not_array);
    const cJSON *item;
    cJSON_ArrayForEach(item, content)
    {
        if (how->string_items && cJSON_IsString(item)) {
            mg_ir_parts_add(a, pv, MG_IR_PART_TEXT)->text = item->valuestring;
            continue;
        }
        const char *type = mg_ir_jstr(item, "type");
        if (!type) return mg_ir_fail(err, errlen, "%s", how->no_type);
        if (how->part(a, item, type, pv, ud, err, errlen)) return -1;
    }
    return 0;
}

mg_ir_part_t *mg_codec_add_text(mg_ir_arena_t *a, mg_ir_parts_t *pv, const cJSON *item, const char *key)
{
    mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_TEXT);
    p->text = mg_codec_jtext(item, key);
    return p;
}

mg_ir_part_t *mg_codec_add_image_url(mg_ir_arena_t *a, mg_ir_parts_t *pv, const char *url, const char *detail)
{
    mg_ir_part_t *p = mg_ir_parts_add(a, pv, MG_IR_PART_IMAGE);
    p->detail = detail;
    if (!mg_ir_parse_data_url(a, url, &p->media_type, &p->data)) p->url = url ? url : "";
    return p;
}

void mg_codec_add_texts(mg_ir_arena_t *a, mg_ir_parts_t *dst, const mg_ir_parts_t *src)
{
    for (size_t k = 0; k < src->n; k++)
        if (src->v[k].type == MG_IR_PART_TEXT) *mg_ir_parts_add(a, dst, MG_IR_PART_TEXT) = src->v[k];
}

void mg_codec_decode_sampling(const cJSON *body, mg_ir_request_t *r)
{
    const cJSON *v;
    if (cJSON_IsNumber(v = mg_ir_jget(body, "temperature"))) {
        r->has_temperature = true;
        r->temperature = v->valuedouble;
    }
    if (cJSON_IsNumber(v = mg_ir_jget(body, "top_p"))) {
        r->has_top_p = true;
        r->top_p = v->valuedouble;
    }
}

void mg_codec_decode_stop(mg_ir_arena_t *a, const cJSON *stop, mg_ir_request_t *r)
{
    if (cJSON_IsString(stop)) {
        r->stop = mg_ir_alloc(a, sizeof *r->stop);
        r->stop[r->n_stop++] = stop->valuestring;
    } else if (cJSON_IsArray(stop)) {
        r->stop = mg_ir_alloc(a, (size_t)(cJSON_GetArraySize(stop) + 1) * sizeof *r->stop);
        const cJSON *s;
        cJSON_ArrayForEach(s, stop)
        {
            if (cJSON_IsString(s)) r->stop[r->n_stop++] = s->valuestring;
        }
    }
}

void mg_codec_decode_tool(mg_ir_tool_t *o, const cJSON *fn, const char *schema_key)
{
    o->description = mg_ir_jstr(fn, "description");
    const cJSON *params = mg_ir_jget(fn, schema_key);
    o->parameters = cJSON_IsObject(params) ? params : NULL;
    const cJSON *strict = mg_ir_jget(fn, "strict");
    if (cJSON_IsBool(strict)) o->strict = cJSON_IsTrue(strict);
}

void mg_codec_decode_format(mg_ir_request_t *r, const char *type, const cJSON *schema_obj)
{
    if (!type) return;
    if (strcmp(type, "json_object") == 0) {
        r->format = MG_IR_FORMAT_JSON_OBJECT;
    } else if (strcmp(type, "json_schema") == 0) {
        r->format = MG_IR_FORMAT_JSON_SCHEMA;
        r->format_name = mg_ir_jstr(schema_obj, "name");
        r->format_schema = mg_ir_jget(schema_obj, "schema");
        const cJSON *st = mg_ir_jget(schema_obj, "strict");
        if (cJSON_IsBool(st)) r->format_strict = cJSON_IsTrue(st);
    } else {
        r->format = MG_IR_FORMAT_TEXT;
    }
}

mg_ir_tool_choice_t mg_codec_openai_tool_choice(const char *s)
{
    if (strcmp(s, "none") == 0) return MG_IR_TOOL_CHOICE_NONE;
    if (strcmp(s, "required") == 0) return MG_IR_TOOL_CHOICE_REQUIRED;
    return MG_IR_TOOL_CHOICE_AUTO;
}

static bool allowed(const cJSON *list, const mg_ir_tool_t *t)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const char *type = mg_ir_jstr(e, "type");
        const char *name = mg_ir_jstr(e, "name");
        if (!name) name = mg_ir_jstr(mg_ir_jget(e, "function"), "name");
        if (t->raw ? type && t->name && strcmp(type, t->name) == 0
                   : (!type || strcmp(type, "function") == 0) && name && t->name && strcmp(name, t->name) == 0)
            return true;
    }
    return false;
}

bool mg_codec_openai_allowed_tools(const cJSON *tc, mg_ir_request_t *r)
{
    const char *type = mg_ir_jstr(tc, "type");
    if (!type || strcmp(type, "allowed_tools") != 0) return false;
    const cJSON *spec = mg_ir_jget(tc, "allowed_tools"); /* Chat nests it; Responses does not */
    if (!cJSON_IsObject(spec)) spec = tc;
    const char *mode = mg_ir_jstr(spec, "mode");
    const cJSON *list = mg_ir_jget(spec, "tools");
    r->tool_choice = mode && strcmp(mode, "required") == 0 ? MG_IR_TOOL_CHOICE_REQUIRED : MG_IR_TOOL_CHOICE_AUTO;
    if (!cJSON_IsArray(list)) return true;
    size_t n = 0;
    for (size_t i = 0; i < r->n_tools; i++)
        n += allowed(list, &r->tools[i]);
    if (!n) { /* nothing allowed: no call may be made, but the tools stay (a history of calls
                 needs their definitions: Anthropic refuses tool_use blocks without tools) */
        r->tool_choice = MG_IR_TOOL_CHOICE_NONE;
        return true;
    }
    n = 0;
    for (size_t i = 0; i < r->n_tools; i++)
        if (allowed(list, &r->tools[i])) r->tools[n++] = r->tools[i];
    r->n_tools = n;
    return true;
}

void mg_codec_decode_extras(const cJSON *body, mg_ir_request_t *r, const char *const *known, size_t n)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, body)
    {
        size_t i = 0;
        while (i < n && !(f->string[0] == known[i][0] && strcmp(f->string, known[i]) == 0))
            i++;
        if (i == n) cJSON_AddItemToObject(r->extras, f->string, cJSON_Duplicate(f, true));
    }
}

/* ---- encoding ---- */

cJSON *mg_codec_text_json(const char *type, const char *text)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "text", text);
    return o;
}

char *mg_codec_image_url(const mg_ir_part_t *p)
{
    if (p->data) return mg_ir_data_url(p->media_type, p->data);
    return mg_xstrdup(p->url ? p->url : "");
}

bool mg_codec_has_image(const mg_ir_part_t *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i].type == MG_IR_PART_IMAGE) return true;
    return false;
}

bool mg_codec_has_opaque(const mg_ir_part_t *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i].type == MG_IR_PART_OPAQUE) return true;
    return false;
}

void mg_codec_add_joined(cJSON *o, const char *key, const mg_ir_part_t *parts, size_t n)
{
    char *s = mg_ir_join_text(parts, n, "\n\n");
    cJSON_AddStringToObject(o, key, s ? s : "");
    free(s);
}

void mg_codec_add_strings(cJSON *o, const char *key, const char *const *v, size_t n)
{
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(v[i]));
}

int mg_codec_opaque_fail(const mg_ir_part_t *p, mg_api_t to, char *err, size_t errlen)
{
    const char *t = mg_ir_jstr(p->raw, "type");
    return mg_ir_fail(err, errlen, "content of type \"%s\" cannot be sent to %s", t ? t : "?", mg_api_name(to));
}

int mg_codec_check_result(const mg_ir_request_t *ir, const mg_ir_part_t *result, mg_api_t to, char *err,
                          size_t errlen)
{
    if (mg_ir_same_api(ir->source, to)) return 0;
    for (size_t i = 0; i < result->n_parts; i++)
        if (result->parts[i].type == MG_IR_PART_OPAQUE) return mg_codec_opaque_fail(&result->parts[i], to, err, errlen);
    return 0;
}

int mg_codec_encode_tools(cJSON *o, const mg_ir_request_t *ir, mg_api_t to, mg_codec_tool_fn tool_json,
                          char *err, size_t errlen)
{
    bool same = mg_ir_same_api(ir->source, to);
    cJSON *tools = cJSON_AddArrayToObject(o, "tools");
    for (size_t i = 0; i < ir->n_tools; i++) {
        const mg_ir_tool_t *t = &ir->tools[i];
        if (!t->raw) {
            cJSON_AddItemToArray(tools, tool_json(t, same));
        } else if (same) {
            cJSON_AddItemToArray(tools, cJSON_Duplicate(t->raw, true));
        } else {
            return mg_ir_fail(err, errlen, "tool of type \"%s\" cannot be sent to %s", t->name ? t->name : "?",
                              mg_api_name(to));
        }
    }
    return 0;
}

void mg_codec_add_tool_fields(cJSON *o, const mg_ir_tool_t *t, const char *schema_key)
{
    cJSON_AddStringToObject(o, "name", t->name);
    if (t->description) cJSON_AddStringToObject(o, "description", t->description);
    if (t->parameters) mg_ir_add_dup(o, schema_key, t->parameters);
    else cJSON_AddItemToObject(o, schema_key, mg_ir_empty_schema());
}

cJSON *mg_codec_openai_tool_choice_json(cJSON *o, mg_ir_tool_choice_t c)
{
    switch (c) {
    case MG_IR_TOOL_CHOICE_UNSET: break;
    case MG_IR_TOOL_CHOICE_AUTO: cJSON_AddStringToObject(o, "tool_choice", "auto"); break;
    case MG_IR_TOOL_CHOICE_NONE: cJSON_AddStringToObject(o, "tool_choice", "none"); break;
    case MG_IR_TOOL_CHOICE_REQUIRED: cJSON_AddStringToObject(o, "tool_choice", "required"); break;
    case MG_IR_TOOL_CHOICE_NAMED: {
        cJSON *tc = cJSON_AddObjectToObject(o, "tool_choice");
        cJSON_AddStringToObject(tc, "type", "function");
        return tc;
    }
    }
    return NULL;
}

void mg_codec_add_format_schema(cJSON *o, const mg_ir_request_t *ir)
{
    cJSON_AddStringToObject(o, "name", ir->format_name ? ir->format_name : "response");
    mg_ir_add_dup(o, "schema", ir->format_schema);
    if (ir->format_strict >= 0) cJSON_AddBoolToObject(o, "strict", ir->format_strict);
}

char *mg_codec_openai_error(mg_api_t api, int status, const char *type, const char *code, const char *message)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "{\"error\":{\"message\":");
    mg_buf_json_str(&b, message ? message : "error");
    mg_buf_puts(&b, ",\"type\":");
    mg_buf_json_str(&b, mg_ir_error_type(api, status, type));
    mg_buf_puts(&b, ",\"param\":null,\"code\":");
    mg_buf_json_str(&b, code);
    mg_buf_puts(&b, "}}");
    return mg_buf_steal(&b);
}

static atomic_ullong placeholder_seq; /* mg_codec_answer_id's ids for answers that had none */

/* Every byte of s outside [A-Za-z0-9_-] made '_', in place. */
static void safe_id_bytes(char *s)
{
    for (char *c = s; *c; c++) {
        bool alnum = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9');
        if (!alnum && *c != '_' && *c != '-') *c = '_';
    }
}

char *mg_codec_answer_id(const char *prefix, const char *opt_id, const char *up_id, const char *fallback)
{
    if (opt_id) return mg_xstrdup(opt_id);
    /* An upstream that names its answers nothing still gets unique ids to its clients (SDKs and
     * logs key on them): the wall clock's seconds and a counter, as request ids are made. */
    if (!up_id || !*up_id)
        return mg_xasprintf("%s-%llx%06llx", fallback, (unsigned long long)(mg_wall_ms() / 1000),
                            (unsigned long long)atomic_fetch_add(&placeholder_seq, 1) & 0xFFFFFFull);
    size_t np = strlen(prefix);
    if (strncmp(up_id, prefix, np) == 0) return mg_xstrdup(up_id);
    char *id = mg_xasprintf("%s%s", prefix, up_id);
    safe_id_bytes(id + np);
    return id;
}

char *mg_codec_anthropic_tool_id(const char *id)
{
    char *s = mg_xstrdup(id ? id : "");
    safe_id_bytes(s);
    return s;
}

static atomic_uint call_id_salt;     /* mg_codec_new_call_id's per-process part, 0 until drawn */
static atomic_ullong call_id_seq;    /* … and its counter */

char *mg_codec_new_call_id(const char *prefix)
{
    unsigned salt = atomic_load(&call_id_salt);
    if (!salt) {
        /* Drawn once; threads that race here may draw twice, and one value wins for all. */
        unsigned r = 0;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
            r = (unsigned)mg_wall_ms() * 2654435761u ^ (unsigned)getpid();
        if (!r) r = 1;
        unsigned expected = 0;
        if (!atomic_compare_exchange_strong(&call_id_salt, &expected, r)) r = expected;
        salt = r;
    }
    return mg_xasprintf("%smg%08x%llx", prefix, salt, (unsigned long long)atomic_fetch_add(&call_id_seq, 1));
}

/* ---- streams ---- */

int mg_codec_emit_text(mg_ir_event_type_t type, const char *s, int index, mg_ir_event_cb cb, void *ud)
{
    if (!s || !*s) return 0;
    mg_ir_event_t ev = {.type = type, .text = s, .text_len = strlen(s), .index = index};
    return cb(ud, &ev);
}

int mg_codec_emit_refusal(const char *s, mg_ir_event_cb cb, void *ud)
{
    if (!s || !*s) return 0;
    mg_ir_event_t ev = {.type = MG_IR_EV_TEXT_DELTA, .text = s, .text_len = strlen(s), .refusal = true};
    return cb(ud, &ev);
}

int mg_codec_emit_end(bool *ended, mg_ir_event_cb cb, void *ud)
{
    *ended = true;
    mg_ir_event_t ev = {.type = MG_IR_EV_END};
    return cb(ud, &ev);
}

int mg_codec_emit_error(bool *ended, const mg_ir_error_t *e, mg_ir_event_cb cb, void *ud)
{
    *ended = true;
    mg_ir_event_t ev = {.type = MG_IR_EV_ERROR, .error = *e};
    return cb(ud, &ev);
}

int mg_codec_emit_raw_error(bool *ended, const char *type, const char *data, size_t len, mg_ir_event_cb cb,
                            void *ud)
{
    char *msg = mg_xstrndup(data, len);
    mg_ir_error_t e = {500, type, NULL, msg};
    int rc = mg_codec_emit_error(ended, &e, cb, ud);
    free(msg);
    return rc;
}

int mg_codec_emit_truncated(bool *ended, const char *type, mg_ir_event_cb cb, void *ud)
{
    mg_ir_error_t e = {502, type, "stream_broken", "the upstream stream ended before the answer was complete"};
    return mg_codec_emit_error(ended, &e, cb, ud);
}

void mg_codec_error_frame(mg_buf_t *out, const char *name, const mg_ir_error_t *e,
                          char *(*encode_error)(int status, const char *type, const char *code,
                                                const char *message))
{
    char *body = encode_error(e->status ? e->status : 500, e->type, e->code, e->message);
    mg_ir_sse_frame(out, name, body, strlen(body));
    free(body);
}
