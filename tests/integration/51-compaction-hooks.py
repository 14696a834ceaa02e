#!/usr/bin/env python3
"""Safety compaction, the optional parts (issue 7), through the real binary: a summarizer model
replaces the dropped turns by its summary, and any failure of it (a stall past
summaryTimeoutMs, an error status) leaves the deterministic drop note, within the time bound; a
policy's compact hook may compact instead, and C checks its result (a refused one falls back to
the deterministic compaction, and the log says why); the compaction and safety config keys
(extraControlTokens gateway-wide and per provider) reach the filters."""

import json
import os
import subprocess
import tempfile
import time

import mglib
from mglib import BIN, MGTestCase, config, history, provider

SUMMARY = "The user asked thirty numbered questions; each was answered."


def text_of(msg):
    c = msg.get("content")
    if isinstance(c, str):
        return c
    return "".join(p.get("text", "") for p in c or [])


class Summaries(MGTestCase):
    def setUp(self):
        self.a, self.s = self.mock("A"), self.mock("S")
        self.gw = self.gateway(config(
            providers={"small": provider(self.a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
                       "loc": provider(self.s, [{"id": "summ", "contextWindow": 32768, "maxTokens": 1024}])},
            primary="small/m",
            gateway={"compaction": {"summarizer": "loc/summ", "summaryTimeoutMs": 1500,
                                    "summaryMaxTokens": 200}}))

    def test_the_summary_replaces_the_dropped_turns(self):
        self.s.set_behavior("answer", content=SUMMARY)
        body = {"model": "small/m", "messages": history()}
        r = self.gw.post_json("/v1/chat/completions", body)
        self.assertEqual(r.status, 200, r)
        # What the summarizer was asked: the dropped turns, flattened, non-streaming, bounded.
        self.assertEqual(len(self.s.requests), 1)
        sreq = self.s.requests[0].json
        self.assertEqual(sreq["model"], "summ")
        self.assertFalse(sreq.get("stream"), sreq.get("stream"))
        self.assertEqual(sreq.get("max_tokens"), 200, sreq)
        self.assertIn("never instructions", text_of(sreq["messages"][0]))
        asked = text_of(sreq["messages"][-1])
        self.assertIn("[user]\nquestion 0 ", asked)
        self.assertLessEqual(len(asked), 48 * 1024 + 512)
        # What the target got: the summary where the note would be, the ends kept.
        sent = self.a.requests[-1].json["messages"]
        self.assertEqual(sent[0], body["messages"][0])
        self.assertEqual(sent[-1], body["messages"][-1])
        note = text_of(sent[1])
        self.assertTrue(note.startswith("[Summary of "), note[:200])
        self.assertIn(SUMMARY, note)
        self.assertNotIn("question 0 ", json.dumps(sent))
        hdr = r.header("x-moongate-compaction") or ""
        self.assertIn("summary", hdr, r)
        self.assertIn("drop_turns", hdr)
        line = self.gw.wait_access(1)[0]
        self.assertEqual(line.get("compaction"), hdr, line)
        self.assertNotIn("compaction_note", line["attempts"][0], line)

    def assert_deterministic(self, r, started, why):
        self.assertEqual(r.status, 200, r)
        sent = self.a.requests[-1].json["messages"]
        note = text_of(sent[1])
        self.assertIn("earlier turns elided by moongate", note)
        self.assertNotIn("Summary of", json.dumps(sent))
        hdr = r.header("x-moongate-compaction") or ""
        self.assertIn("drop_turns", hdr, r)
        self.assertNotIn("summary", hdr)
        line = self.gw.wait_access(1)[0]
        cn = line["attempts"][0].get("compaction_note", "")
        self.assertIn("summary by loc/summ failed", cn, line)
        self.assertIn(why, cn, line)
        self.assertEqual(line.get("compaction"), hdr, line)
        self.gw.wait_lines(lambda l: l.get("msg") == "compaction" and l.get("level") == "warn" and
                           "summary by loc/summ failed" in l.get("detail", ""), what="warning that says why")

    def test_a_summarized_request_keeps_its_lowered_max_tokens(self):
        # Asked for more than small/m's maxTokens: lowered, and the header says so after the
        # summary replaced the drop note as well as when the summarizer failed.
        for behavior, kind in (("answer", "summary"), ("fail", "drop_turns")):
            if behavior == "answer":
                self.s.set_behavior("answer", content=SUMMARY)
            else:
                self.s.set_behavior("fail", status=500)
            r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history(),
                                                           "max_tokens": 7000})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.a.requests[-1].json["max_tokens"], 512)
            hdr = r.header("x-moongate-compaction") or ""
            self.assertIn("max_tokens=7000->512; ", hdr, behavior)
            self.assertIn(kind, hdr)
            self.assertIn("max_tokens", hdr.split("filters=")[1], hdr)

    def test_a_stalled_summarizer_leaves_the_drop_note_within_the_timeout(self):
        self.s.set_behavior("stall")
        started = time.monotonic()
        r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        took = time.monotonic() - started
        self.assert_deterministic(r, started, "no answer within summaryTimeoutMs (1500 ms)")
        self.assertGreaterEqual(took, 1.4, "the summarizer was given its time")
        self.assertLess(took, 1.5 + 1.0, "timeout + 1 s at most")
        self.s.wait_disconnect(0, timeout=3)  # the stalled transfer was abandoned

    def test_a_failing_summarizer_leaves_the_drop_note(self):
        self.s.set_behavior("fail", status=500)
        started = time.monotonic()
        r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        self.assert_deterministic(r, started, "it answered HTTP 500")
        self.assertLess(time.monotonic() - started, 1.5)

    def test_a_summarizer_that_said_429_is_not_asked_while_it_cools_down(self):
        self.s.set_behavior("fail", status=429, headers={"Retry-After": "30"})
        started = time.monotonic()
        r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        self.assert_deterministic(r, started, "it answered HTTP 429")
        self.assertEqual(len(self.s.requests), 1)
        # Its health is tracked like any attempt's: the 429 cooled it for Retry-After.
        h = self.gw.get("/admin/health").json
        e = [m for p in h["providers"] for m in p.get("models", []) if m.get("ref") == "loc/summ"]
        self.assertEqual([(m["state"], m["cooldown_class"]) for m in e], [("cooling_down", "rate_limit")], h)
        self.s.set_behavior("answer", content=SUMMARY)
        r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.s.requests), 1, "a cooling summarizer was asked again")
        self.assertNotIn("summary", r.header("x-moongate-compaction") or "", r)
        line = self.gw.wait_access(2, pred=lambda l: l.get("path") == "/v1/chat/completions")[-1]
        self.assertIn("no summary: summarizer loc/summ is cooling down", line["attempts"][0].get("compaction_note", ""), line)

    def test_an_empty_summary_leaves_the_drop_note(self):
        self.s.set_behavior("answer", content="   ")
        r = self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        self.assert_deterministic(r, time.monotonic(), "empty text")

    def test_a_request_that_fits_asks_no_summarizer(self):
        r = self.gw.chat("small/m", "short")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.s.requests), 0)


class SummaryCharges(MGTestCase):
    """A summarizer is a billed upstream call: counted in the metrics under its name, shown in the
    access line, and charged to the caller's key; and the key's models hold for it."""

    def gw_with(self, key_models, fallbacks=()):
        self.a, self.s = self.mock("A"), self.mock("S")
        keys = [{"id": "k", "key": "${MG_IT_SUMKEY}", "models": key_models, "budget": {"amount": 1, "period": "day"}}]
        return self.gateway(config(
            providers={"small": provider(self.a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
                       "sum": provider(self.s, [{"id": "s", "contextWindow": 32768, "maxTokens": 1024,
                                                 "cost": {"input": 100000, "output": 100000}}])},
            primary="small/m", fallbacks=fallbacks,
            gateway={"keys": keys, "compaction": {"summarizer": "sum/s", "summaryMaxTokens": 200,
                                                  "summaryTimeoutMs": 1000}}),
            env={"MG_IT_SUMKEY": "mgk-sum-1"})

    def test_a_summary_is_charged_to_the_key_and_counted(self):
        gw = self.gw_with(["small/m", "sum/s"])
        self.s.set_behavior("answer", content=SUMMARY)
        auth = {"Authorization": "Bearer mgk-sum-1"}
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()}, headers=auth)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.s.requests), 1)
        line = gw.wait_access(1)[0]
        self.assertEqual(line["summary"]["model"], "sum/s", line)
        self.assertGreater(line["summary"]["tokens"], 1000, line)
        self.assertGreater(line["summary"]["cost"], 1, line)
        text = gw.get("/metrics").body.decode()
        self.assertGreater(mglib.metric(text, "moongate_cost_total", model="sum/s") or 0, 1, text)
        self.assertGreater(mglib.metric(text, "moongate_tokens_total", model="sum/s", direction="in") or 0, 1000)
        # The key's budget of 1 is spent by the summary: the next request is refused.
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": [{"role": "user", "content": "hi"}]},
                         headers=auth)
        self.assertOpenAIError(r, 429, "budget_exceeded")

    def test_a_summary_that_timed_out_is_charged_its_estimate(self):
        # The summarizer got the request and worked past summaryTimeoutMs: it may bill that work,
        # so the estimate of what was asked is charged (the candidate goes with the drop note).
        gw = self.gw_with(["small/m", "sum/s"])
        self.s.set_behavior("slow", delay_ms=3000)
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()},
                         headers={"Authorization": "Bearer mgk-sum-1"})
        self.assertEqual(r.status, 200, r)
        line = gw.wait_access(1)[0]
        self.assertEqual(line["summary"]["model"], "sum/s", line)
        self.assertGreater(line["summary"]["tokens"], 1000, line)
        self.assertIn("summaryTimeoutMs", line["attempts"][0].get("compaction_note", ""), line)

    def test_a_route_name_the_key_lists_allows_a_summarizer_in_its_plan(self):
        gw = self.gw_with(["default"], fallbacks=["sum/s"])
        self.s.set_behavior("answer", content=SUMMARY)
        r = gw.post_json("/v1/chat/completions", {"model": "default", "messages": history()},
                         headers={"Authorization": "Bearer mgk-sum-1"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.s.requests), 1, "the route's own fallback may summarize")

    def test_a_key_that_may_not_use_the_summarizer_gets_the_drop_note(self):
        gw = self.gw_with(["small/m"])
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()},
                         headers={"Authorization": "Bearer mgk-sum-1"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.s.requests), 0, "the conversation went to a summarizer the key may not use")
        line = gw.wait_access(1)[0]
        self.assertIn("may not use summarizer sum/s", line["attempts"][0].get("compaction_note", ""), line)


class SummaryReuse(MGTestCase):
    """A summary is made once per request: a fallback (or a retry) that drops the same turns
    reuses it; one that drops other turns asks again."""

    def start_chain(self, fallback_window):
        self.a, self.b, self.s = self.mock("A"), self.mock("B"), self.mock("S")
        self.gw = self.gateway(config(
            providers={"small": provider(self.a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
                       "other": provider(self.b, [{"id": "m", "contextWindow": fallback_window,
                                                   "maxTokens": 512}]),
                       "loc": provider(self.s, [{"id": "summ", "contextWindow": 32768}])},
            primary="small/m", fallbacks=["other/m"],
            gateway={"compaction": {"summarizer": "loc/summ", "summaryMaxTokens": 200}}))
        self.a.set_behavior("fail", status=500)
        self.s.set_behavior("answer", content=SUMMARY)
        r = self.gw.post_json("/v1/chat/completions", {"model": "default", "messages": history()})
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(len(self.a.requests), 1)
        self.assertEqual(len(self.b.requests), 1)
        for up in (self.a, self.b):  # every try carried a summary in place of the dropped turns
            for q in up.requests:
                note = text_of(q.json["messages"][1])
                self.assertTrue(note.startswith("[Summary of "), note[:200])
                self.assertIn(SUMMARY, note)
        self.assertIn("summary", r.header("x-moongate-compaction") or "", r)
        line = self.gw.wait_access(1)[0]
        self.assertEqual(line["attempts"][-1]["model"], "other/m", line)
        return line

    def test_a_fallback_that_drops_the_same_turns_reuses_the_summary(self):
        line = self.start_chain(4096)
        self.assertEqual(len(self.s.requests), 1, "the summary was made again for the fallback")
        att = line["attempts"]
        self.assertIn("summary by loc/summ reused", att[-1].get("compaction_note", ""), line)
        self.assertNotIn("compaction_note", att[0], line)

    def test_a_fallback_that_drops_other_turns_asks_again(self):
        line = self.start_chain(3072)  # a smaller window drops more turns
        self.assertEqual(len(self.s.requests), 2, self.s.requests)
        self.assertNotEqual(self.s.requests[0].body, self.s.requests[1].body)
        self.assertNotIn("reused", json.dumps(line), line)


class SummarizerFromThePolicy(MGTestCase):
    def test_the_policy_names_the_summarizer_per_candidate(self):
        a, s = self.mock("A"), self.mock("S")
        gw = self.gateway(start=False, cfg=config(
            providers={"small": provider(a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
                       "loc": provider(s, [{"id": "summ", "contextWindow": 32768}])},
            primary="small/m", gateway={"policy": "policy.lua"}))
        with open(os.path.join(gw.dir, "policy.lua"), "w") as f:
            f.write("function route(req)\n"
                    "  if req.headers['x-no-summary'] then return {{model = 'small/m', summarizer = false}} end\n"
                    "  return {{model = 'small/m', summarizer = 'loc/summ'}}\n"
                    "end\n")
        gw.start()
        s.set_behavior("answer", content=SUMMARY)
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()})
        self.assertIn("summary", r.header("x-moongate-compaction") or "", r)
        self.assertIn(SUMMARY, text_of(a.requests[-1].json["messages"][1]))
        r = gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()},
                         headers={"x-no-summary": "1"})
        self.assertNotIn("summary", r.header("x-moongate-compaction") or "", r)
        self.assertEqual(len(s.requests), 1)


HOOK = """
function route(req) return 'small/m' end

function compact(req, budget, model)
  local m = req.messages
  local mode = req.headers['x-mode']
  gw.trace('compact %s for %s, %d messages', mode or 'keep', model.ref, #m)
  if mode == 'none' then return nil end
  if mode == 'assistant-first' then return { m[2], m[#m] } end
  if mode == 'everything' then return m end
  if mode == 'error' then error('the hook broke') end
  local kept, used = {}, 0
  local note = { role = 'user', content = 'policy note: ' .. (#m - 1) .. ' messages left out' }
  used = gw.tokens(note.content) + 10 + m[#m].tokens
  assert(used <= budget)
  return { note, m[#m] }
end
"""


class CompactHook(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.gw = self.gateway(start=False, cfg=config(
            providers={"small": provider(self.a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}])},
            primary="small/m", gateway={"policy": "policy.lua"}))
        with open(os.path.join(self.gw.dir, "policy.lua"), "w") as f:
            f.write(HOOK)
        self.gw.start()

    def post(self, mode=None):
        h = {"x-mode": mode} if mode else {}
        return self.gw.post_json("/v1/chat/completions", {"model": "small/m", "messages": history()}, headers=h)

    def test_the_hooks_result_is_what_the_model_receives(self):
        r = self.post()
        self.assertEqual(r.status, 200, r)
        sent = self.a.requests[-1].json["messages"]
        self.assertEqual(sent, [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "policy note: 60 messages left out"},
                                {"role": "user", "content": "the last question"}])
        hdr = r.header("x-moongate-compaction") or ""
        self.assertIn("filters=policy", hdr, r)
        self.assertIn("compact keep for small/m, 61 messages", r.route.get("trace", ""), r.route["raw"])
        line = self.gw.wait_access(1)[0]
        self.assertEqual(line.get("compaction"), hdr)

    def assert_fallback(self, r, why):
        self.assertEqual(r.status, 200, r)
        sent = self.a.requests[-1].json["messages"]
        self.assertIn("earlier turns elided by moongate", text_of(sent[1]))
        self.assertNotIn("policy note", json.dumps(sent))
        hdr = r.header("x-moongate-compaction") or ""
        self.assertIn("drop_turns", hdr, r)
        self.assertNotIn("policy", hdr)
        line = self.gw.wait_access(1, pred=lambda l: l["attempts"] and
                                  "compaction_note" in l["attempts"][0])[-1]
        self.assertIn(why, line["attempts"][0]["compaction_note"], line)
        return line

    def test_a_result_that_breaks_the_rules_falls_back(self):
        line = self.assert_fallback(self.post("assistant-first"), "the first message must be from the user")
        self.assertIn("compact hook result refused", line.get("trace", ""), line)

    def test_a_result_over_the_budget_falls_back(self):
        self.assert_fallback(self.post("everything"), "exceed the budget of")

    def test_a_failing_hook_falls_back(self):
        self.assert_fallback(self.post("error"), "policy.lua:11: the hook broke")

    def test_nil_lets_moongate_compact(self):
        r = self.post("none")
        self.assertEqual(r.status, 200, r)
        self.assertIn("earlier turns elided by moongate", text_of(self.a.requests[-1].json["messages"][1]))
        line = self.gw.wait_access(1)[0]
        self.assertNotIn("compaction_note", line["attempts"][0], line)

    def test_the_hook_is_not_called_when_the_request_fits(self):
        r = self.gw.chat("small/m", "short", headers={"x-mode": "error"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("compact", r.route.get("trace", "") or "", r.route["raw"])
        self.assertIsNone(r.header("x-moongate-compaction"))


class SafetyConfig(MGTestCase):
    def test_extra_control_tokens_are_stripped(self):
        a, b = self.mock("A"), self.mock("B")
        gw = self.gateway(config(
            providers={"a": provider(a, ["m"]), "b": provider(b, ["m"])}, primary="a/m",
            gateway={"compaction": {"extraControlTokens": ["<<CUT>>"]},
                     "providers": {"b": {"safety": {"extraControlTokens": ["[[x]]"],
                                                    "oldReasoning": False}}}}))
        content = "keep <<cut>> this [[X]] and <|im_start|> that"
        r = gw.post_json("/v1/chat/completions", {"model": "a/m", "messages": [{"role": "user", "content": content}]})
        self.assertEqual(r.status, 200, r)
        got = a.requests[-1].json["messages"][0]["content"]
        self.assertNotIn("<<cut>>", got)
        self.assertNotIn("<|im_start|>", got)
        self.assertIn("[[X]]", got, "provider a has no such token")
        self.assertIn("control_tokens", r.header("x-moongate-compaction") or "")
        r = gw.post_json("/v1/chat/completions", {"model": "b/m", "messages": [{"role": "user", "content": content}]})
        got = b.requests[-1].json["messages"][0]["content"]
        for tok in ("<<cut>>", "[[X]]", "<|im_start|>"):
            self.assertNotIn(tok, got)
        self.assertIn("keep", got)
        self.assertIn("that", got)

    def test_bad_keys_are_refused_with_their_position(self):
        cases = [({"compaction": {"summaryTimeoutMs": "soon"}},
                  r"gateway\.compaction\.summaryTimeoutMs: expected an integer from 100 to 600000, got \"soon\""),
                 ({"compaction": {"summarizer": "a/nope"}},
                  r"gateway\.compaction\.summarizer: unknown model \"a/nope\""),
                 ({"providers": {"a": {"safety": {"extraControlTokens": "x"}}}},
                  r"gateway\.providers\.a\.safety\.extraControlTokens: expected an array of at most 64 strings")]
        for gwcfg, want in cases:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "moongate.json5")
                with open(path, "w") as f:
                    json.dump(config(providers={"a": provider("http://127.0.0.1:9/v1", ["m"])}, primary="a/m",
                                     gateway=gwcfg), f, indent=2)
                p = subprocess.run([BIN, "check", "--config", path], capture_output=True, text=True, timeout=30)
                self.assertNotEqual(p.returncode, 0, p)
                self.assertRegex(p.stdout + p.stderr, r"moongate\.json5:\d+:\d+: " + want)


if __name__ == "__main__":
    mglib.main()
