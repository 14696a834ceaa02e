#!/usr/bin/env python3
"""GET /v1/models and /v1/models/{name} (OpenAI list format, provider/id entries plus aliases, models.mode merge and
replace), GET /health, and configs written the JSON5 way (issue 2, items 3, 5 and 9)."""

import mglib
from mglib import MGTestCase, config, provider

BUILTIN = ("anthropic/claude-sonnet-4-5", "anthropic/claude-opus-4-6", "openai/gpt-5")


class Models(MGTestCase):
    def providers(self):
        a, b = self.down(), self.down()  # /v1/models never asks the upstreams
        return {"lmstudio": provider(a, ["minimax-m2.1-gs32", "qwen3-8b"]),
                "vllm": provider(b, ["llama-3.1-8b"])}

    ALIASES = {"Minimax": "lmstudio/minimax-m2.1-gs32", "Opus": "lmstudio/qwen3-8b"}
    DECLARED = {"lmstudio/minimax-m2.1-gs32", "lmstudio/qwen3-8b", "vllm/llama-3.1-8b"}

    def models(self, gw):
        r = gw.get("/v1/models")
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", r.header("content-type", ""))
        body = r.json
        self.assertEqual(body.get("object"), "list", body)
        self.assertIsInstance(body.get("data"), list)
        for e in body["data"]:
            self.assertEqual(e.get("object"), "model", e)
            self.assertIsInstance(e.get("id"), str, e)
            self.assertIsInstance(e.get("created"), int, e)
            self.assertIsInstance(e.get("owned_by"), str, e)
        ids = [e["id"] for e in body["data"]]
        self.assertEqual(len(ids), len(set(ids)), "duplicate ids: %r" % ids)
        # "default" may be listed too (it is a name a client can send); nothing else is extra.
        return body, set(ids) - {"default"}

    def test_replace_lists_exactly_the_declared_models_and_aliases(self):
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 aliases=self.ALIASES, mode="replace"))
        body, ids = self.models(gw)
        self.assertEqual(ids, self.DECLARED | set(self.ALIASES))

    def test_anthropic_shape_lists_the_same_names(self):
        # A client that sends anthropic-version gets Anthropic's list shape, with the same names
        # as the OpenAI shape: the models, every alias and default.
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 aliases=self.ALIASES, mode="replace"))
        openai_ids = {e["id"] for e in gw.get("/v1/models").json["data"]}
        r = gw.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
        self.assertEqual(r.status, 200, r)
        body = r.json
        for e in body["data"]:
            self.assertEqual(e.get("type"), "model", e)
            self.assertIsInstance(e.get("display_name"), str, e)
            self.assertIsInstance(e.get("created_at"), str, e)
        ids = [e["id"] for e in body["data"]]
        self.assertEqual(set(ids), openai_ids)
        self.assertLessEqual(set(self.ALIASES) | {"default"}, set(ids))
        self.assertEqual(body["first_id"], ids[0])
        self.assertEqual(body["last_id"], ids[-1])
        self.assertIs(body["has_more"], False)

    def test_anthropic_list_pages(self):
        # Anthropic's paging: limit (default 20, 1..1000) entries after after_id or just before
        # before_id; has_more in the direction asked; a cursor that is gone gives an empty page.
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 aliases=self.ALIASES, mode="replace"))
        av = {"anthropic-version": "2023-06-01"}
        ids = [e["id"] for e in gw.get("/v1/models", headers=av).json["data"]]
        self.assertGreater(len(ids), 4, ids)

        def page(q):
            r = gw.get("/v1/models?" + q, headers=av)
            self.assertEqual(r.status, 200, r)
            return [e["id"] for e in r.json["data"]], r.json["has_more"], r.json["first_id"], r.json["last_id"]

        self.assertEqual(page("limit=2"), (ids[:2], True, ids[0], ids[1]))
        self.assertEqual(page("limit=2&after_id=" + ids[1]), (ids[2:4], len(ids) > 4, ids[2], ids[3]))
        self.assertEqual(page("limit=1000&after_id=" + ids[1]), (ids[2:], False, ids[2], ids[-1]))
        self.assertEqual(page("limit=2&before_id=" + ids[3]), (ids[1:3], True, ids[1], ids[2]))
        self.assertEqual(page("limit=5&before_id=" + ids[3]), (ids[:3], False, ids[0], ids[2]))
        self.assertEqual(page("after_id=" + ids[-1]), ([], False, None, None))
        self.assertEqual(page("after_id=gone%2Fmodel"), ([], False, None, None))
        for q in ("limit=0", "limit=1001", "limit=x", "limit=", "after_id=a&before_id=b"):
            r = gw.get("/v1/models?" + q, headers=av)
            self.assertEqual((r.status, r.json["type"], r.json["error"]["type"]),
                             (400, "error", "invalid_request_error"), (q, r))
        # The OpenAI shape has no paging: the whole list whatever the query.
        self.assertEqual(len(gw.get("/v1/models?limit=2").json["data"]), len(ids))

    def test_one_model_by_name_in_both_shapes(self):
        # GET /v1/models/{name}: what the SDKs' models.retrieve asks; the name as listed, its
        # slash sent as is or escaped.
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 aliases=self.ALIASES, mode="replace"))
        listed = {e["id"]: e for e in gw.get("/v1/models").json["data"]}
        for path, name in (("lmstudio/qwen3-8b", "lmstudio/qwen3-8b"),
                           ("lmstudio%2Fqwen3-8b", "lmstudio/qwen3-8b"),
                           ("Minimax", "Minimax"), ("default", "default")):
            r = gw.get("/v1/models/" + path)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(r.json, listed[name], path)
            r = gw.get("/v1/models/" + path, headers={"anthropic-version": "2023-06-01"})
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual((r.json["type"], r.json["id"]), ("model", name), r)
            self.assertIsInstance(r.json.get("created_at"), str, r)
        r = gw.get("/v1/models/lmstudio/nope")
        err = self.assertOpenAIError(r, 404, "model_not_found")
        self.assertIn("lmstudio/nope", err["message"])
        r = gw.get("/v1/models/nope", headers={"anthropic-version": "2023-06-01"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual((r.json["type"], r.json["error"]["type"]), ("error", "not_found_error"), r)
        r = gw.post_json("/v1/models/default", {})
        self.assertEqual(r.status, 405, r)

    def test_merge_adds_the_builtin_hosted_models(self):
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 aliases=self.ALIASES, mode="merge"))
        body, ids = self.models(gw)
        self.assertLessEqual(self.DECLARED | set(self.ALIASES), ids)
        for ref in BUILTIN:
            self.assertIn(ref, ids)

    def test_mode_defaults_to_merge(self):
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b",
                                 mode=None))
        body, ids = self.models(gw)
        self.assertLessEqual(self.DECLARED, ids)
        for ref in BUILTIN:
            self.assertIn(ref, ids)

    def test_merge_with_a_declared_builtin_provider_adds_its_models(self):
        provs = self.providers()
        a = self.down()
        provs["anthropic"] = provider(a, ["claude-test-x"], api="anthropic-messages",
                                      base_url="http://127.0.0.1:%d" % a.port)
        gw = self.gateway(config(providers=provs, primary="lmstudio/qwen3-8b", mode="merge"))
        body, ids = self.models(gw)
        self.assertIn("anthropic/claude-test-x", ids)
        self.assertIn("anthropic/claude-opus-4-6", ids)

    def test_alias_entries_are_marked_as_such_or_resolve(self):
        # Whatever an alias entry carries, asking for it must work like its target.
        m = self.mock("LM")
        gw = self.gateway(config(providers={"lmstudio": provider(m, ["minimax-m2.1-gs32"])},
                                 primary="lmstudio/minimax-m2.1-gs32",
                                 aliases={"Minimax": "lmstudio/minimax-m2.1-gs32"}))
        body, ids = self.models(gw)
        self.assertEqual(ids, {"lmstudio/minimax-m2.1-gs32", "Minimax"})
        for asked in ids:
            r = gw.chat(asked)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(m.requests[-1].model, "minimax-m2.1-gs32")

    def test_health(self):
        gw = self.gateway(config(providers=self.providers(), primary="lmstudio/qwen3-8b"))
        r = gw.get("/health")
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", r.header("content-type", ""))
        self.assertIsInstance(r.json, dict, r)


class Json5Config(MGTestCase):
    def test_a_json5_config_with_everything_json5_allows(self):
        m = self.mock("LM")
        raw = """// LM Studio on this machine, written the way people write OpenClaw configs
{
  models: {
    mode: 'replace',
    providers: {
      lmstudio: {
        baseUrl: 'http://127.0.0.1:%d/v1',   /* local */
        api: "openai-completions",
        models: [
          { id: 'minimax-m2.1-gs32', name: 'MiniMax M2.1', contextWindow: 0x30000,
            maxTokens: 8192., cost: { input: .0, output: +0, cacheRead: 0, cacheWrite: 0, }, },
        ],
      },
    },
  },
  agents: { defaults: {
    model: { primary: 'lmstudio/minimax-m2.1-gs32', fallbacks: [], },
    models: { 'lmstudio/minimax-m2.1-gs32': { alias: 'Min\\
imax' } },
  } },
  gateway: { maxBodyBytes: 1e6, },
}
""" % m.port
        gw = self.gateway(raw=raw)
        r = gw.get("/v1/models")
        self.assertEqual({e["id"] for e in r.json["data"]} - {"default"},
                         {"lmstudio/minimax-m2.1-gs32", "Minimax"})
        r = gw.chat("Minimax")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(m.requests[0].model, "minimax-m2.1-gs32")


if __name__ == "__main__":
    mglib.main()
