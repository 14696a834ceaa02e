#!/usr/bin/env python3
"""The command line around the config: `moongate check`, `serve` refusing a bad config with a
file:line:column message, unknown OpenClaw keys tolerated with a warning, and every example under
examples/ loading cleanly (issue 2, items 3 and 4)."""

import glob
import json
import os
import re
import subprocess
import tempfile

import mglib
from mglib import BIN, SOURCE_DIR, MGTestCase, config, provider

BAD = """{
  models: {
    mode: "replace",
    providers: {
      lmstudio: {
        baseUrl: "http://127.0.0.1:1234/v1",
        api: "openai-completions",
        models: [ { id: "m", name: "M", contextWindow: "big", maxTokens: 10 } ],
      },
    },
  },
}
"""


def run(args, env=None, timeout=10):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout + p.stderr


class Check(MGTestCase):
    def write(self, text, name="c.json5"):
        d = tempfile.mkdtemp(prefix="mg-it-")
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        self.addCleanup(lambda: (os.remove(path), os.rmdir(d)))
        return path

    def test_check_accepts_a_good_config(self):
        path = self.write(json.dumps(config(
            providers={"a": provider("http://127.0.0.1:1/v1", ["m"])}, primary="a/m")))
        rc, out = run(["check", "--config", path])
        self.assertEqual(rc, 0, out)

    def test_check_rejects_a_bad_config_naming_file_line_column_and_key(self):
        path = self.write(BAD)
        rc, out = run(["check", "--config", path])
        self.assertNotEqual(rc, 0, out)
        self.assertIn(path + ":8:", out)
        self.assertIn("models.providers.lmstudio.models[0].contextWindow", out)
        self.assertIn("big", out)

    def test_check_reports_json5_syntax_errors_with_position(self):
        path = self.write('{\n  models: {\n    mode: "replace",,\n  }\n}\n')
        rc, out = run(["check", "--config", path])
        self.assertNotEqual(rc, 0, out)
        self.assertIn(path + ":3:", out)

    def test_check_rejects_a_log_path_that_cannot_be_written(self):
        good = config(providers={"a": provider("http://127.0.0.1:9/v1", ["m"])}, primary="a/m",
                      gateway={"log": {"path": "/nonexistent-mg-dir/moongate.log"}})
        path = self.write(json.dumps(good))
        rc, out = run(["check", "--config", path])
        self.assertEqual(rc, 1, out)
        # Named at the config's line:col, like every config error.
        self.assertRegex(out, re.escape(path) + r":1:\d+: gateway\.log\.path: cannot write "
                         r"/nonexistent-mg-dir/moongate\.log: No such file or directory")
        # serve refuses it the same way, before listening.
        rc, out = run(["serve", "--config", path, "--listen", "127.0.0.1:0"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, re.escape(path) + r":1:\d+: gateway\.log\.path: cannot write")
        d = tempfile.mkdtemp(prefix="mg-it-")
        self.addCleanup(lambda: os.rmdir(d))
        good["gateway"]["log"]["path"] = os.path.join(d, "moongate.log")
        rc, out = run(["check", "--config", self.write(json.dumps(good))])
        self.assertEqual(rc, 0, out)
        self.assertFalse(os.path.exists(os.path.join(d, "moongate.log")), "check creates nothing")

    def test_a_missing_policy_or_patterns_file_is_named_at_its_config_line(self):
        # Like every other config error: FILE:LINE:COL of the value that names the file, its key
        # path, then the file and why it cannot be read.
        text = ('{\n  models: { mode: "replace", providers: { a: { baseUrl: "http://127.0.0.1:9/v1",\n'
                '    api: "openai-completions", models: [ { id: "m", name: "m" } ] } } },\n'
                '  gateway: {\n    policy: "nope.lua",\n    errorPatterns: "%s",\n  },\n}\n')
        path = self.write(text % "nope-patterns.lua")
        d = os.path.dirname(path)
        rc, out = run(["check", "--config", path])
        self.assertEqual(rc, 1, out)
        self.assertIn("%s:6:20: gateway.errorPatterns: cannot read %s: No such file or directory"
                      % (path, os.path.join(d, "nope-patterns.lua")), out)
        with open(os.path.join(d, "patterns.lua"), "w") as f:
            f.write("return {}\n")
        self.addCleanup(os.remove, os.path.join(d, "patterns.lua"))
        with open(path, "w") as f:
            f.write(text % "patterns.lua")
        rc, out = run(["check", "--config", path])
        self.assertEqual(rc, 1, out)
        self.assertIn("%s:5:13: gateway.policy: cannot read %s: No such file or directory"
                      % (path, os.path.join(d, "nope.lua")), out)

    def test_a_whole_current_openclaw_json_loads(self):
        # OpenClaw's own gateway block as a current OpenClaw writes it: its settings are ignored
        # with a warning each, newer ones too; a typo of one of moongate's own still fails.
        gateway = {"mode": "local", "port": 18789, "bind": "loopback", "allowRealIpFallback": False,
                   "auth": {"mode": "token", "token": "x"}, "tools": {"deny": ["exec"]},
                   "webchat": {}, "push": {}, "handshakeTimeoutMs": 15000,
                   "channelHealthCheckMinutes": 5, "channelStaleEventThresholdMinutes": 30,
                   "channelMaxRestartsPerHour": 10, "someSettingOfLater": True}
        cfg = config(providers={"a": provider("http://127.0.0.1:9/v1", ["m"])}, primary="a/m",
                     gateway=gateway, channels={"whatsapp": {}})
        rc, out = run(["check", "--config", self.write(json.dumps(cfg, indent=2), "openclaw.json")])
        self.assertEqual(rc, 0, out)
        for key in ("allowRealIpFallback", "tools", "channelMaxRestartsPerHour"):
            self.assertRegex(out, r"gateway\.%s: an OpenClaw gateway setting, not moongate's: ignored" % key)
        self.assertIn("gateway.someSettingOfLater: unknown key ignored: not moongate's", out)
        gateway["errorPattern"] = "p.lua"
        rc, out = run(["check", "--config", self.write(json.dumps(cfg, indent=2), "openclaw.json")])
        self.assertEqual(rc, 1, out)
        self.assertIn('gateway.errorPattern: unknown key (did you mean "errorPatterns"?)', out)

    def test_check_on_a_missing_file_fails_cleanly(self):
        rc, out = run(["check", "--config", "/nonexistent/moongate.json5"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("/nonexistent/moongate.json5", out)

    def test_serve_refuses_a_bad_config(self):
        path = self.write(BAD)
        rc, out = run(["serve", "--config", path, "--listen", "127.0.0.1:%d" % mglib.free_port()])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("contextWindow", out)

    def test_unknown_cli_usage_fails(self):
        rc, out = run(["frobnicate"])
        self.assertNotEqual(rc, 0, out)
        rc, out = run([])
        self.assertNotEqual(rc, 0, out)
        for args in (["check", "--config"], ["route", "--config", "x.json5", "--request"]):
            rc, out = run(args)
            self.assertEqual(rc, 2, out)
            self.assertIn("moongate: %s needs a value" % args[-1], out)

    def test_examples_all_pass_check(self):
        examples = sorted(glob.glob(os.path.join(SOURCE_DIR, "examples", "*.json5")) +
                          glob.glob(os.path.join(SOURCE_DIR, "examples", "*.json")))
        if not examples:
            self.skipTest("no examples/*.json5 yet")
        for path in examples:
            with self.subTest(example=os.path.basename(path)):
                rc, out = run(["check", "--config", path])
                self.assertEqual(rc, 0, out)


class UnknownKeys(MGTestCase):
    def test_unknown_openclaw_keys_are_warnings_not_errors(self):
        a = self.mock("A")
        cfg = config(providers={"a": provider(a, ["m"])}, primary="a/m")
        cfg["channels"] = {"whatsapp": {"enabled": True}}
        cfg["agents"]["defaults"]["workspace"] = "~/openclaw"
        gw = self.gateway(cfg)
        self.assertEqual(gw.chat("default").status, 200)
        # read by a thread of the harness: waited for, not looked up
        gw.wait_lines(lambda l: "channels" in json.dumps(l), what="warning naming the ignored key 'channels'")

    def test_listen_flag_overrides_the_config(self):
        a = self.mock("A")
        other = mglib.free_port()
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"listen": "127.0.0.1:%d" % other}))
        self.assertNotEqual(gw.port, other)
        self.assertEqual(gw.get("/health").status, 200)   # served on --listen's port


if __name__ == "__main__":
    mglib.main()
