#!/usr/bin/env python3
"""Hot reload (issue 4 item 6): POST /admin/reload, SIGHUP and file changes build a new generation
and publish it atomically; a broken file is rejected with a clear reason and the old generation
keeps serving; requests in flight finish on the generation they started with; reloading under
steady load fails no request."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import mglib
from mglib import MGTestCase, config, provider


class Reload(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.b = self.mock("B")

    def cfg(self, primary):
        return config(providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])},
                      primary=primary)

    def write(self, gw, cfg=None, raw=None):
        # Written to a temporary name and renamed, as editors and config managers do.
        tmp = gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(raw if raw is not None else json.dumps(cfg))
        os.replace(tmp, gw.config_path)

    def served(self, gw):
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)
        return r.header("x-moongate-model"), r.route["gen"]

    def test_admin_reload_publishes_a_new_generation(self):
        gw = self.gateway(self.cfg("a/m"))
        self.assertEqual(self.served(gw)[0], "a/m")
        self.write(gw, self.cfg("b/m"))
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)
        gen = r.json["generation"]
        model, route_gen = self.served(gw)
        self.assertEqual(model, "b/m")
        self.assertEqual(int(route_gen), gen)
        p = gw.get("/admin/policy").json
        self.assertEqual(p["generation"], gen)
        self.assertGreaterEqual(p["reloads"]["ok"], 1)

    def test_settings_read_at_start_are_named_when_a_reload_changes_them(self):
        gw = self.gateway(self.cfg("a/m"))
        cfg = self.cfg("b/m")
        cfg["gateway"] = {"threads": 2, "listen": "127.0.0.1:1"}
        self.write(gw, cfg)
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)  # the rest applies
        self.assertEqual(self.served(gw)[0], "b/m")
        warns = [l.get("detail", "") for l in gw.wait_lines(
            lambda l: l.get("msg") == "reload" and l.get("level") == "warn", n=2)]
        self.assertTrue(any(w.startswith("gateway.threads changed to 2: it takes effect on restart")
                            for w in warns), warns)
        self.assertTrue(any(w.startswith("gateway.listen changed to 127.0.0.1:1: it takes effect on restart")
                            for w in warns), warns)
        # Still serving where it started.
        self.assertEqual(gw.get("/health").status, 200)

    def linked(self, cfg):
        """A gateway whose config can be changed without its watcher seeing it, for point(): the
        config file gets a second name (a hard link) in a directory the gateway does not watch,
        made before it starts (a new link changes the file's ctime)."""
        gw = self.gateway(cfg, start=False)
        os.mkdir(os.path.join(gw.dir, "unwatched"))
        os.link(gw.config_path, os.path.join(gw.dir, "unwatched", "moongate.json5"))
        gw.start()
        return gw

    def point(self, gw, cfg):
        """Rewrites the config, in place, through its second name. inotify tells a directory's
        watch only of what is done through a name in that directory: the gateway, which watches
        its config's directory, is not told, so no file change causes a reload."""
        with open(os.path.join(gw.dir, "unwatched", "moongate.json5"), "w") as f:
            f.write(json.dumps(cfg))

    def swap(self, gw, cfg):
        """point(), then POST /admin/reload, the only reload; returns the new generation."""
        self.point(gw, cfg)
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)
        return r.json["generation"]

    def warnings_of(self, gw, gen):
        """The reload warnings logged by the reload that published generation gen (they come
        just before its result line)."""
        def done(l):
            return l.get("msg") == "reload" and l.get("result") == "ok" and l.get("generation") == gen

        gw.wait_lines(done)
        out = []
        for l in gw.log_lines():
            if l.get("msg") != "reload":
                continue
            if "result" in l:
                if done(l):
                    return out
                out = []
            elif l.get("level") == "warn":
                out.append(l.get("detail", ""))
        self.fail("no result line for generation %s" % gen)

    def test_settings_read_at_start_are_compared_with_what_started(self):
        # What runs is what the process started with: a reload is compared with that, not with
        # the generation before it. Going back is silent; a change not undone is named again on
        # every reload. maxConnections, trimmed at start to the descriptor limit, is compared as
        # configured.
        gw = self.linked(self.cfg("a/m"))
        changed = self.cfg("a/m")
        changed["gateway"] = {"threads": 2, "maxConnections": 500}
        w = self.warnings_of(gw, self.swap(gw, changed))
        self.assertEqual(sorted(x.split(":")[0] for x in w),
                         ["gateway.maxConnections changed to 500", "gateway.threads changed to 2"], w)
        self.assertEqual(self.warnings_of(gw, self.swap(gw, self.cfg("a/m"))), [])
        changed = self.cfg("a/m")
        changed["gateway"] = {"threads": 2}
        self.assertEqual(len(self.warnings_of(gw, self.swap(gw, changed))), 1)
        changed = self.cfg("b/m")  # another edit; threads still 2, still not applied
        changed["gateway"] = {"threads": 2}
        w = self.warnings_of(gw, self.swap(gw, changed))
        self.assertEqual(len(w), 1, w)
        self.assertTrue(w[0].startswith("gateway.threads changed to 2: it takes effect on restart"), w)
        self.assertEqual(self.served(gw)[0], "b/m")
        self.assertEqual(len(gw.get("/health").json["requests_by_thread"]), 1)  # still one thread

    def test_admin_reload_watches_the_files_it_newly_names(self):
        # POST /admin/reload to a config that names a policy file never watched before: editing
        # that file must reload, as after SIGHUP or a config change, without either.
        gw = self.linked(self.cfg("a/m"))
        with open(os.path.join(gw.dir, "new-policy.lua"), "w") as f:
            f.write('function route(req) return {"a/m"} end\n')
        cfg = self.cfg("a/m")
        cfg["gateway"] = {"policy": "new-policy.lua"}
        gen = self.swap(gw, cfg)
        self.assertEqual(self.served(gw), ("a/m", str(gen)))
        tmp = os.path.join(gw.dir, "new-policy.lua.tmp")
        with open(tmp, "w") as f:
            f.write('function route(req) return {"b/m"} end\n')
        os.replace(tmp, os.path.join(gw.dir, "new-policy.lua"))
        deadline = time.monotonic() + 3 * mglib.TIMEOUT_SCALE
        while time.monotonic() < deadline and self.served(gw)[0] != "b/m":
            time.sleep(0.05)
        model, route_gen = self.served(gw)
        self.assertEqual(model, "b/m", "the edit of the newly named policy was not picked up")
        self.assertGreater(int(route_gen), gen)
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("why") == "file change", what="file-change reload")

    def test_a_refused_admin_reload_watches_the_file_it_lacked(self):
        # POST /admin/reload to a config naming a policy file that does not exist yet is refused;
        # creating that file then reloads by itself.
        gw = self.linked(self.cfg("a/m"))
        cfg = self.cfg("a/m")
        cfg["gateway"] = {"policy": "later.lua"}
        self.point(gw, cfg)
        err = self.assertOpenAIError(gw.request("POST", "/admin/reload"), 400, "reload_failed")
        self.assertIn("gateway.policy: cannot read", err["message"])
        time.sleep(0.3 * mglib.TIMEOUT_SCALE)  # the main thread re-arms after the refusal
        tmp = os.path.join(gw.dir, "later.tmp")
        with open(tmp, "w") as f:
            f.write('function route(req) return {"b/m"} end\n')
        os.replace(tmp, os.path.join(gw.dir, "later.lua"))
        deadline = time.monotonic() + 3 * mglib.TIMEOUT_SCALE
        while time.monotonic() < deadline and self.served(gw)[0] != "b/m":
            time.sleep(0.05)
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_admin_reload_moves_the_log_to_a_new_path(self):
        # The log follows gateway.log.path after any reload, not only after SIGHUP.
        gw = self.linked(self.cfg("a/m"))
        cfg = self.cfg("a/m")
        cfg["gateway"] = {"log": {"path": "moved.log"}}
        gen = self.swap(gw, cfg)
        moved = os.path.join(gw.dir, "moved.log")
        self.served(gw)
        deadline = time.monotonic() + 3 * mglib.TIMEOUT_SCALE
        text = ""
        while time.monotonic() < deadline and '"access"' not in text:
            time.sleep(0.05)
            text = open(moved).read() if os.path.exists(moved) else ""
        self.assertIn('"access"', text, "the access line did not go to the new log (generation %s)" % gen)

    def test_a_reload_to_a_log_path_that_cannot_be_written_is_refused(self):
        # The reload is refused (it used to say ok, and the log then failed to reopen); the old
        # generation keeps serving and logging where it did.
        gw = self.gateway(self.cfg("a/m"))
        cfg = self.cfg("a/m")
        cfg["gateway"] = {"log": {"path": "/nonexistent-mg-dir/moongate.log"}}
        self.write(gw, cfg)
        r = gw.request("POST", "/admin/reload")
        err = self.assertOpenAIError(r, 400, "reload_failed")
        self.assertIn("gateway.log.path: cannot write /nonexistent-mg-dir/moongate.log", err["message"])
        self.assertEqual(self.served(gw)[0], "a/m")
        gw.wait_lines(lambda l: l.get("msg") == "access", what="access line in the old log")

    def test_broken_file_is_rejected_and_the_old_generation_keeps_serving(self):
        gw = self.gateway(self.cfg("a/m"))
        self.write(gw, raw='{models: {mode: "replace"}, gateway: {lisen: "x"}}')
        r = gw.request("POST", "/admin/reload")
        err = self.assertOpenAIError(r, 400, "reload_failed")
        self.assertIn("gateway.lisen: unknown key", err["message"])
        self.assertEqual(self.served(gw)[0], "a/m")
        lines = gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("result") == "error",
                              what="refused reload")
        self.assertIn("gateway.lisen", lines[-1]["error"])

    def reloaded(self, gw, after, what):
        """Waits for a reload on a file change that publishes a generation after `after`; returns
        that generation."""
        lines = gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("why") == "file change"
                              and l.get("result") == "ok" and l.get("generation", 0) > after, what=what)
        return lines[0]["generation"]

    def test_a_kubernetes_configmap_update_reloads(self):
        # A ConfigMap volume: moongate.json5 -> ..data/moongate.json5 (and policy.lua likewise),
        # ..data -> ..2024_01. kubelet updates it by writing ..2024_02, renaming a new ..data link
        # over the old one and removing ..2024_01: the files the gateway read are never written.
        gw = self.gateway(self.cfg("a/m"), start=False)
        d = gw.dir

        def version(name, primary):
            os.mkdir(os.path.join(d, name))
            cfg = self.cfg(primary)
            cfg["gateway"] = {"policy": "policy.lua"}
            with open(os.path.join(d, name, "moongate.json5"), "w") as f:
                f.write(json.dumps(cfg))
            with open(os.path.join(d, name, "policy.lua"), "w") as f:
                f.write('function route(req) gw.trace("%s") return gw.util.chain_for(req.model) end\n' % name)

        def update(new, old, primary):
            version(new, primary)
            os.symlink(new, os.path.join(d, "..data_tmp"))
            os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
            shutil.rmtree(os.path.join(d, old))

        version("..2024_01", "a/m")
        os.remove(gw.config_path)
        os.symlink("..2024_01", os.path.join(d, "..data"))
        os.symlink("..data/moongate.json5", gw.config_path)
        os.symlink("..data/policy.lua", os.path.join(d, "policy.lua"))
        gw.start()
        r = gw.chat("default")
        self.assertEqual((r.header("x-moongate-model"), r.route.get("trace")), ("a/m", "..2024_01"), r)
        update("..2024_02", "..2024_01", "b/m")
        gen = self.reloaded(gw, 1, "reload after the first ConfigMap update")
        r = gw.chat("default")
        self.assertEqual((r.header("x-moongate-model"), r.route.get("trace"), r.route["gen"]),
                         ("b/m", "..2024_02", str(gen)), r)
        # Watched still, though the directory it read from is gone.
        update("..2024_03", "..2024_02", "a/m")
        gen = self.reloaded(gw, gen, "reload after the second ConfigMap update")
        r = gw.chat("default")
        self.assertEqual((r.header("x-moongate-model"), r.route.get("trace"), r.route["gen"]),
                         ("a/m", "..2024_03", str(gen)), r)

    def test_a_symlink_pointed_elsewhere_or_replaced_reloads(self):
        gw = self.gateway(self.cfg("a/m"), start=False)
        os.replace(gw.config_path, os.path.join(gw.dir, "v1.json5"))
        os.symlink("v1.json5", gw.config_path)
        gw.start()
        with open(os.path.join(gw.dir, "v2.json5"), "w") as f:
            f.write(json.dumps(self.cfg("b/m")))
        subprocess.run(["ln", "-sfn", "v2.json5", gw.config_path], check=True)
        gen = self.reloaded(gw, 1, "reload after ln -sfn")
        self.assertEqual(self.served(gw), ("b/m", str(gen)))
        # sed -i on the link writes a file in its place (the file it pointed to is left alone)
        subprocess.run(["sed", "-i", 's#"primary": "b/m"#"primary": "a/m"#', gw.config_path], check=True)
        self.assertFalse(os.path.islink(gw.config_path))
        gen = self.reloaded(gw, gen, "reload after sed -i")
        self.assertEqual(self.served(gw), ("a/m", str(gen)))

    def test_a_reload_logs_what_the_config_warns_of(self):
        # As the start does: an unset variable, a key ignored. On every reload that takes the file,
        # and in the admin endpoint's answer.
        gw = self.gateway(self.cfg("a/m"), env={"MG_TEST_UNSET_7": None})
        cfg = self.cfg("b/m")
        cfg["models"]["providers"]["b"]["apiKey"] = "${MG_TEST_UNSET_7}"
        cfg["agents"]["defaults"]["model"]["fallback"] = ["a/m"]
        unset = lambda l: (l.get("msg") == "config" and l.get("level") == "warn"  # noqa: E731
                           and "models.providers.b.apiKey: environment variable MG_TEST_UNSET_7 is not set"
                           in l.get("detail", ""))
        typo = lambda l: (l.get("msg") == "config" and l.get("level") == "warn"  # noqa: E731
                          and "agents.defaults.model.fallback: unknown key ignored" in l.get("detail", ""))
        self.write(gw, cfg)
        gw.wait_lines(unset, what="unset variable warning of the reload")
        gw.wait_lines(typo, what="ignored key warning of the reload")
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json.get("warnings", [])), 2, r.json)
        self.assertIn("MG_TEST_UNSET_7 is not set", r.json["warnings"][0])
        self.assertIn("fallback: unknown key ignored", r.json["warnings"][1])
        gw.wait_lines(unset, 2, what="unset variable warning of the admin reload")
        gw.wait_lines(typo, 2, what="ignored key warning of the admin reload")

    def test_file_change_is_picked_up_without_a_signal(self):
        gw = self.gateway(self.cfg("a/m"))
        self.write(gw, self.cfg("b/m"))
        deadline = time.monotonic() + 3 * mglib.TIMEOUT_SCALE
        while time.monotonic() < deadline and self.served(gw)[0] != "b/m":
            time.sleep(0.05)
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_an_edit_made_while_the_gateway_starts_is_not_missed(self):
        # The config is replaced after the gateway read it and before it watches it (here while a
        # slow errorPatterns file loads). inotify cannot report that; the gateway compares each
        # file with what it read once it watches it, and reloads.
        def cfg(primary):
            c = self.cfg(primary)
            c["models"]["providers"]["a"]["apiKey"] = "${MG_TEST_NEVER_SET}"  # a warning once read
            c["gateway"] = {"errorPatterns": "slow.lua"}
            return c

        gw = self.gateway(cfg("a/m"), start=False)
        with open(os.path.join(gw.dir, "slow.lua"), "w") as f:
            f.write("string.find(string.rep('x', 6000), 'x*y') return {}\n")  # one slow match, ~0.2 s
        starting = threading.Thread(target=gw.start)
        starting.start()
        gw.wait_lines(lambda l: "MG_TEST_NEVER_SET" in l.get("detail", ""), timeout=10,
                      what="warning of the config just read")
        self.write(gw, cfg("b/m"))
        starting.join()
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("why") == "file change"
                      and l.get("result") == "ok", timeout=5, what="reload of the config edited at start")
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_a_broken_config_and_an_edited_policy_reload_once(self):
        # The config is broken, then the policy it names is edited: one refused reload for each
        # edit, not one after another until the config is fixed.
        cfg = self.cfg("a/m")
        cfg["gateway"] = {"policy": "p.lua"}
        gw = self.gateway(cfg, start=False)
        policy = os.path.join(gw.dir, "p.lua")
        with open(policy, "w") as f:
            f.write('function route(req) return {"a/m"} end\n')
        gw.start()
        refused = lambda l: l.get("msg") == "reload" and l.get("result") == "error"  # noqa: E731
        self.write(gw, raw='{models: {mode: "replace"}, gateway: {lisen: "x"}}')
        gw.wait_lines(refused, 1, what="refused reload of the broken config")
        with open(policy + ".tmp", "w") as f:
            f.write('function route(req) return {"b/m"} end\n')
        os.replace(policy + ".tmp", policy)
        gw.wait_lines(refused, 2, what="refused reload after the policy edit")
        time.sleep(1.0 * mglib.TIMEOUT_SCALE)
        n = len([l for l in gw.log_lines() if refused(l)])
        self.assertLessEqual(n, 3, "the gateway kept reloading:\n" + gw.stderr_text()[-2000:])
        self.assertEqual(self.served(gw)[0], "a/m")

    def test_sighup_reloads(self):
        # The file is left untouched, so only SIGHUP can cause this reload (the watcher sees
        # nothing): a new generation must appear, logged with why = SIGHUP.
        gw = self.gateway(self.cfg("a/m"))
        gen0 = int(self.served(gw)[1])
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and int(self.served(gw)[1]) == gen0:
            time.sleep(0.05)
        self.assertGreater(int(self.served(gw)[1]), gen0)
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("why") == "SIGHUP", what="SIGHUP reload")

    def test_request_in_flight_finishes_on_its_generation(self):
        self.a.set_behavior("slow", delay_ms=800)
        gw = self.gateway(self.cfg("a/m"))
        out = {}
        t = threading.Thread(target=lambda: out.update(r=gw.chat("default")))
        t.start()
        self.a.wait_requests(1)
        self.write(gw, self.cfg("b/m"))
        self.assertEqual(gw.request("POST", "/admin/reload").status, 200)
        t.join(5)
        self.assertEqual(out["r"].status, 200, out["r"])
        self.assertEqual(out["r"].header("x-moongate-model"), "a/m")
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_reloading_under_load_fails_no_request(self):
        # Alternate a valid config (a or b) and a broken one every 50 ms while 4 clients send
        # requests: every request succeeds and is served by a model of a valid config.
        gw = self.gateway(self.cfg("a/m"))
        stop = threading.Event()
        results = []

        def client():
            while not stop.is_set():
                r = gw.chat("default", timeout=10)
                results.append((r.status, r.header("x-moongate-model")))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        configs = [self.cfg("b/m"), None, self.cfg("a/m"), None]
        for i in range(40):
            c = configs[i % len(configs)]
            if c is None:
                self.write(gw, raw="{models: {mode: 'replace'}, agents: {defaults: {model: 'nope/x'}}}")
            else:
                self.write(gw, c)
            gw.request("POST", "/admin/reload")
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertGreater(len(results), 50)
        bad = [r for r in results if r[0] != 200 or r[1] not in ("a/m", "b/m")]
        self.assertEqual(bad, [], "%d of %d requests failed" % (len(bad), len(results)))
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("result") == "ok", 20, what="reload")
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("result") == "error", 20, what="refused reload")


class Admin(MGTestCase):
    def test_admin_key_guards_the_admin_endpoints(self):
        a = self.mock("A")
        cfg = config(providers={"a": provider(a, ["m"])}, primary="a/m",
                     gateway={"adminKey": "${MG_TEST_ADMIN_KEY}"})
        gw = self.gateway(cfg, env={"MG_TEST_ADMIN_KEY": "adm-canary-7781"}, secrets=["adm-canary-7781"])
        r = gw.request("POST", "/admin/reload")
        self.assertOpenAIError(r, 401, "admin_unauthorized")
        r = gw.request("POST", "/admin/reload", headers={"Authorization": "Bearer wrong"})
        self.assertOpenAIError(r, 401, "admin_unauthorized")
        r = gw.request("POST", "/admin/reload", headers={"Authorization": "Bearer adm-canary-7781"})
        self.assertEqual(r.status, 200, r)
        self.assertOpenAIError(gw.get("/admin/reload", headers={"Authorization": "Bearer adm-canary-7781"}),
                               405, "method_not_allowed")
        self.assertOpenAIError(gw.get("/admin/nope", headers={"Authorization": "Bearer adm-canary-7781"}),
                               404, "not_found")


if __name__ == "__main__":
    mglib.main()
