/* chromium.h — headless Chromium driven over the Chrome DevTools Protocol, for tests.
 *
 * Starts Debian's chromium with --remote-debugging-pipe (the protocol's JSON messages on file
 * descriptors 3 and 4, each ended by a NUL byte; no port, no websocket) and the flags a root
 * sandbox-less machine without network needs: --headless --no-sandbox --disable-gpu --disable-quic
 * --no-first-run --disable-background-networking --disable-component-update --disable-sync and a
 * fresh --user-data-dir. One page is opened and attached (Target.createTarget/attachToTarget,
 * flatten) with the Runtime, Log, Network and Page domains enabled. While commands run, the
 * events that matter to a test are collected: console errors and failed assertions
 * (Runtime.consoleAPICalled), uncaught exceptions (Runtime.exceptionThrown), browser log errors
 * such as CSP violations (Log.entryAdded level "error"), and every network request that is not
 * the page itself, a file: or a data: URL (Network.requestWillBeSent).
 * The browser dies with the test process (PR_SET_PDEATHSIG) and is closed by chromium_stop.
 */
#ifndef DSPY_TEST_CHROMIUM_H
#define DSPY_TEST_CHROMIUM_H

#include <stdbool.h>
#include <stddef.h>

#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/str.h"

typedef struct chromium chromium;

/* The chromium binary: $DSPY_CHROMIUM, else /usr/bin/chromium, /usr/bin/chromium-browser;
 * NULL when none is executable. */
const char *chromium_find(void);

/* Starts the browser (profile in `profile_dir`, its stderr into `log_path`) and opens a page of
 * width x height CSS pixels. DSPY_ERR_IO/TIMEOUT on failure. */
dspy_status chromium_start(const char *binary, const char *profile_dir, const char *log_path, int width, int height,
                           chromium **out);
/* Browser.close, then waits for the process (SIGKILL after 10 s). NULL-safe. */
void chromium_stop(chromium *c);

/* Sends a command to the page's session and waits for its answer (*result: the "result" object,
 * new reference; may be NULL). DSPY_ERR_REMOTE with the protocol's error message,
 * DSPY_ERR_TIMEOUT after timeout_s. */
dspy_status chromium_call(chromium *c, const char *method, dspy_json *params, double timeout_s, dspy_json **result);
/* Page.navigate to `url` and waits for Page.loadEventFired. */
dspy_status chromium_load(chromium *c, const char *url, double timeout_s);
/* Runtime.evaluate of `expression` (returnByValue); *value is its value (new reference). An
 * exception in the expression is DSPY_ERR_REMOTE with its text. */
dspy_status chromium_eval(chromium *c, const char *expression, dspy_json **value);
/* A full-page PNG screenshot written to `path`; *width_px / *height_px from the PNG header. */
dspy_status chromium_screenshot(chromium *c, const char *path, int *width_px, int *height_px);

/* The problems seen so far, one per line ("console error: ...", "exception: ...", "log error:
 * ...", "network: GET http://..."), and their count. */
const char *chromium_problems(const chromium *c);
int chromium_problem_count(const chromium *c);

#endif
