// hello.cpp — a C++17 program built against an installed libdspy (tests/install/run.sh).
// It includes the umbrella header, checks the linked library's version against the headers',
// parses a signature and a JSON object through the C API, and prints what it found.
#include <dspy/dspy.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace {

struct signature_free {
    void operator()(dspy_signature *s) const { dspy_signature_free(s); }
};
struct json_decref {
    void operator()(dspy_json *v) const { dspy_json_decref(v); }
};

int fail(const char *what) {
    std::fprintf(stderr, "hello: %s: %s\n", what, dspy_errmsg());
    return 1;
}

}  // namespace

int main() {
    if (std::strcmp(dspy_version(), DSPY_VERSION_STRING) != 0) {
        std::fprintf(stderr, "hello: headers say %s, library says %s\n", DSPY_VERSION_STRING, dspy_version());
        return 1;
    }
    dspy_signature *raw = nullptr;
    if (dspy_signature_parse("question, context: list[str] -> answer", "Answer briefly.", &raw) != DSPY_OK)
        return fail("dspy_signature_parse");
    std::unique_ptr<dspy_signature, signature_free> sig(raw);
    char *text = dspy_signature_text(sig.get());
    if (!text) return fail("dspy_signature_text");
    std::string round_trip(text);
    std::free(text);

    const char doc[] = "{\"answer\": \"Paris\", \"n\": 3}";
    dspy_json *rawj = nullptr;
    if (dspy_json_parse(doc, sizeof doc - 1, "doc", &rawj) != DSPY_OK) return fail("dspy_json_parse");
    std::unique_ptr<dspy_json, json_decref> j(rawj);
    const char *answer = dspy_json_str(dspy_json_get(j.get(), "answer"));
    if (dspy_signature_n_inputs(sig.get()) != 2 || dspy_signature_n_outputs(sig.get()) != 1 ||
        round_trip != "question, context -> answer" || !answer || std::strcmp(answer, "Paris") != 0 ||
        dspy_json_intval(dspy_json_get(j.get(), "n")) != 3) {
        std::fprintf(stderr, "hello: unexpected results: signature '%s', answer '%s'\n", round_trip.c_str(),
                     answer ? answer : "(null)");
        return 1;
    }
    // A bad signature (a duplicate field) is an error with a message, not a crash.
    dspy_signature *bad = nullptr;
    if (dspy_signature_parse("question, question -> answer", nullptr, &bad) == DSPY_OK || bad) {
        std::fprintf(stderr, "hello: a duplicate field was accepted\n");
        dspy_signature_free(bad);
        return 1;
    }
    std::printf("dspy %s: signature '%s', answer '%s'\n", dspy_version(), round_trip.c_str(), answer);
    return 0;
}
