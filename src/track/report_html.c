/* report_html.c — the self-contained HTML report (dspy_report_write).
 *
 * One file: the style (assets/report.css) and the drawing script (assets/report.js), both
 * compiled into the library by cmake/embed_assets.cmake, and the report's data
 * (dspy_report_model) as JSON in a <script type="application/json"> element. Every '<', '>' and
 * '&' of the JSON is written as a \u escape, so no text of a run (prompts, answers, labels) can
 * end the element or open markup. A Content-Security-Policy allows only the inline script and
 * style: the page cannot fetch anything over the network, even by accident.
 * Does not: compute numbers (report_model.c) or draw (report.js).
 */
#include <stdlib.h>
#include <string.h>

#include "track/track_priv.h"

extern const char dspy_asset_report_js[];
extern const size_t dspy_asset_report_js_len;
extern const char dspy_asset_report_css[];
extern const size_t dspy_asset_report_css_len;

static void html_escape(dspy_str *out, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': dspy_str_append(out, "&lt;"); break;
        case '>': dspy_str_append(out, "&gt;"); break;
        case '&': dspy_str_append(out, "&amp;"); break;
        case '"': dspy_str_append(out, "&quot;"); break;
        default: dspy_str_appendc(out, *s);
        }
    }
}

/* JSON text with <, > and & as \u003c, \u003e, \u0026 (same value for JSON.parse: these
 * characters only occur inside strings in JSON text). */
static void json_for_script(dspy_str *out, const char *json, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = json[i];
        if (c == '<') dspy_str_append(out, "\\u003c");
        else if (c == '>') dspy_str_append(out, "\\u003e");
        else if (c == '&') dspy_str_append(out, "\\u0026");
        else dspy_str_appendc(out, c);
    }
}

dspy_status dspy_report_write(const char *dir, const char *compare_dir, const char *out_html) {
    dspy_json *model = NULL;
    dspy_str json = DSPY_STR_INIT, html = DSPY_STR_INIT, title = DSPY_STR_INIT;
    dspy_status st = dspy_report_model(dir, compare_dir, &model);
    if (st) goto fail;
    if ((st = dspy_json_dump(model, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &json))) goto fail;
    const dspy_json *runs = dspy_json_get(model, "runs");
    for (size_t i = 0; i < dspy_json_size(runs); i++)
        dspy_str_appendf(&title, "%s%s", i ? " vs " : "", dspy_json_str_or(dspy_json_at(runs, i), "name", "run"));
    dspy_str_append(&html, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                           "script-src 'unsafe-inline'; style-src 'unsafe-inline'\">\n"
                           "<meta name=\"generator\" content=\"dspy.c (dspy report)\">\n<title>dspy report: ");
    html_escape(&html, dspy_str_cstr(&title));
    dspy_str_append(&html, "</title>\n<style>\n");
    dspy_str_appendn(&html, dspy_asset_report_css, dspy_asset_report_css_len);
    dspy_str_append(&html, "</style>\n</head>\n<body>\n<div id=\"app\"></div>\n<noscript><p>This report draws its "
                           "charts with JavaScript. The same numbers are in the run directory: run.json, "
                           "metrics.jsonl, results.json.</p></noscript>\n"
                           "<script type=\"application/json\" id=\"dspy-report-data\">");
    json_for_script(&html, json.ptr, json.len);
    dspy_str_append(&html, "</script>\n<script>\n");
    dspy_str_appendn(&html, dspy_asset_report_js, dspy_asset_report_js_len);
    dspy_str_append(&html, "</script>\n</body>\n</html>\n");
    if (!dspy_str_ok(&html) || !dspy_str_ok(&title)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory writing the report");
        goto fail;
    }
    st = dspy_write_file(out_html, html.ptr, html.len);
fail:
    dspy_str_free(&json);
    dspy_str_free(&html);
    dspy_str_free(&title);
    dspy_json_decref(model);
    return st;
}
