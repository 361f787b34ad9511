/* quiet_log.h — the log sink `dspy compile` and `dspy eval` install unless --verbose: every
 * message passes to the default "[dspy] LEVEL: message" stderr line, except DSPy's per-call
 * warning "LM response was truncated due to exceeding max_tokens=..." (one long line per
 * answer of a weak student), which is shown once and then only counted; quiet_log_end prints
 * the count and restores the default sink.
 */
#ifndef DSPY_TOOL_QUIET_LOG_H
#define DSPY_TOOL_QUIET_LOG_H

void quiet_log_begin(void);
void quiet_log_end(void);

#endif
