/* Line editing for the prompts of `vmm repl` and `vmm attach`: libedit's
 * readline interface (BSD-licensed) in its callback form.
 *
 * - fd 0 is watched with a uv_poll only while a prompt is up, and each
 *   readable event hands one key to rl_callback_read_char, so VMs, tasks and
 *   console output go on while a line is typed. Once a line is complete the
 *   handler is removed and the poll stopped: keys typed while a chunk runs
 *   wait in the terminal (and vm:attach's raw reader may have them).
 * - Signals stay with libuv (rl_catch_signals = 0): SIGINT is the REPL's
 *   (core.catch_sigint), SIGWINCH resizes the line here.
 * - Console output that reaches the terminal while the prompt is up clears
 *   the prompt line first and redraws it after (console_set_sink_guard).
 * - History is read from and written to one file; Tab asks a Lua function
 *   for the words that complete the one before the cursor.
 *
 *   core.edit_open{history = path, complete = function(word, line, start)}
 *                         -> true, or nil and why (stdin is no terminal)
 *   core.edit_prompt(p)   shows prompt p and reads keys
 *   core.edit_line()      -> the line (added to the history), false while
 *                            none is complete, nil at Ctrl-D
 *   core.edit_cancel()    drops the line being typed (Ctrl-C)
 *   core.edit_close()     writes the history, puts the terminal back */
#include "lvmm.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>

#include "console.h"

#define HISTORY_MAX 1000

static struct {
	bool open;
	bool active;       /* a prompt is up, keys are read */
	bool inited;       /* poll and winch handles initialised (never closed) */
	uv_poll_t poll;
	uv_signal_t winch;
	bool done;         /* a line (or EOF) came since the prompt */
	char *line;        /* NULL with done: EOF */
	char history[PATH_MAX];
	lua_State *T;      /* the thread completions run on */
	int thread_ref, complete_ref;
	char **words;      /* the last completion's candidates */
	size_t nwords, next_word;
} ed = { .thread_ref = LUA_NOREF, .complete_ref = LUA_NOREF };

static void on_line(char *line)
{
	/* the handler goes at once: nothing is read until the next prompt */
	ed.done = true;
	ed.line = line;
	rl_callback_handler_remove();
	ed.active = false;
	uv_poll_stop(&ed.poll);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
	(void)h;
	(void)events;
	if (status < 0) { /* fd 0 went bad: as the end of input */
		on_line(NULL);
		return;
	}
	if (ed.active)
		rl_callback_read_char();
}

static void on_winch(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	if (ed.active)
		rl_resize_terminal();
}

/* Around console output while the prompt is up: clear the line, then
 * redraw the prompt and what was typed. */
static void hide_prompt(void)
{
	if (ed.active) {
		FILE *out = rl_outstream ? rl_outstream : stdout;
		fputs("\r\033[K", out);
		fflush(out);
	}
}

static void show_prompt(void)
{
	if (ed.active)
		rl_forced_update_display();
}

/* ---- completion ---- */

static void drop_words(void)
{
	for (size_t i = ed.next_word; i < ed.nwords; i++)
		free(ed.words[i]);
	free(ed.words);
	ed.words = NULL;
	ed.nwords = ed.next_word = 0;
}

/* The generator rl_completion_matches calls: the words, one by one (each
 * malloc'd; readline frees them). */
static char *next_word(const char *text, int state)
{
	(void)text;
	(void)state;
	return ed.next_word < ed.nwords ? ed.words[ed.next_word++] : NULL;
}

/* Asks the Lua completer for (word, line, start) on the completion thread
 * and keeps the strings it returns. A failing completer completes nothing. */
static void ask_completer(const char *word, int start)
{
	drop_words();
	lua_State *T = ed.T;
	if (!T || ed.complete_ref == LUA_NOREF)
		return;
	lua_settop(T, 0);
	lua_rawgeti(T, LUA_REGISTRYINDEX, ed.complete_ref);
	lua_pushstring(T, word);
	lua_pushstring(T, rl_line_buffer ? rl_line_buffer : "");
	lua_pushinteger(T, start);
	if (lua_pcall(T, 3, 1, 0) != LUA_OK || !lua_istable(T, -1)) {
		lua_settop(T, 0);
		return;
	}
	size_t n = lua_rawlen(T, -1);
	ed.words = calloc(n ? n : 1, sizeof(*ed.words));
	for (size_t i = 1; ed.words && i <= n; i++) {
		lua_rawgeti(T, -1, (lua_Integer)i);
		const char *s = lua_tostring(T, -1);
		if (s && (ed.words[ed.nwords] = strdup(s)))
			ed.nwords++;
		lua_pop(T, 1);
	}
	lua_settop(T, 0);
}

static char **complete(const char *text, int start, int end)
{
	(void)end;
	rl_attempted_completion_over = 1; /* no file names */
	ask_completer(text, start);
	if (!ed.nwords) {
		drop_words();
		return NULL;
	}
	char **m = rl_completion_matches(text, next_word);
	drop_words();
	return m;
}

/* ---- the functions ---- */

static int l_edit_open(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		lua_pushnil(L);
		lua_pushliteral(L, "line editing: stdin or stdout is not a terminal");
		return 2;
	}
	if (ed.open)
		return luaL_error(L, "line editing: already open");
	lua_getfield(L, 1, "history");
	const char *h = luaL_optstring(L, -1, "");
	if (strlen(h) >= sizeof(ed.history))
		return luaL_error(L, "line editing: field history: the path is too long");
	snprintf(ed.history, sizeof(ed.history), "%s", h);
	lua_pop(L, 1);
	lua_getfield(L, 1, "complete");
	if (!lua_isnil(L, -1)) {
		luaL_checktype(L, -1, LUA_TFUNCTION);
		ed.complete_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		ed.T = lua_newthread(L);
		ed.thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	} else {
		lua_pop(L, 1);
	}
	if (!ed.inited) {
		int err = uv_poll_init(lvmm_loop(), &ed.poll, STDIN_FILENO);
		if (!err)
			err = uv_signal_init(lvmm_loop(), &ed.winch);
		if (err) {
			lua_pushnil(L);
			lua_pushfstring(L, "line editing: %s", uv_strerror(err));
			return 2;
		}
		ed.inited = true;
		uv_unref((uv_handle_t *)&ed.winch);
	}
	rl_catch_signals = 0;
	rl_catch_sigwinch = 0;
	rl_readline_name = "vmm";
	/* '.' and ':' stay inside a word: vm:st<TAB>, vmm.net.<TAB> */
	rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{([,+-*/%^~#";
	rl_completer_word_break_characters = (char *)rl_basic_word_break_characters;
	rl_attempted_completion_function = complete;
	rl_completion_append_character = '\0';
	using_history();
	stifle_history(HISTORY_MAX);
	if (ed.history[0] && read_history(ed.history) != 0 && errno != ENOENT)
		fprintf(stderr, "vmm: history %s: %s\n", ed.history, strerror(errno));
	uv_signal_start(&ed.winch, on_winch, SIGWINCH);
	console_set_sink_guard(hide_prompt, show_prompt);
	ed.open = true;
	lua_pushboolean(L, 1);
	return 1;
}

static int l_edit_prompt(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	if (!ed.open)
		return luaL_error(L, "line editing: not open");
	if (ed.active)
		rl_callback_handler_remove();
	free(ed.line);
	ed.line = NULL;
	ed.done = false;
	rl_callback_handler_install(p, on_line);
	ed.active = true;
	int err = uv_poll_start(&ed.poll, UV_READABLE, on_readable);
	if (err) {
		on_line(NULL);
		return luaL_error(L, "line editing: watching stdin: %s", uv_strerror(err));
	}
	return 0;
}

/* Adds line to the history (not blank, not the last one again) and
 * rewrites the file (0600). */
static void remember(const char *line)
{
	if (!line[strspn(line, " \t")])
		return;
	HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
	if (last && last->line && strcmp(last->line, line) == 0)
		return;
	add_history(line);
	if (!ed.history[0])
		return;
	mode_t old = umask(0077);
	int rc = write_history(ed.history);
	umask(old);
	if (rc != 0) {
		fprintf(stderr, "vmm: history %s: %s (not saved from now on)\n", ed.history, strerror(errno));
		ed.history[0] = '\0';
	}
}

static int l_edit_line(lua_State *L)
{
	if (!ed.done) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (!ed.line) {
		lua_pushnil(L);
		return 1;
	}
	remember(ed.line);
	lua_pushstring(L, ed.line);
	free(ed.line);
	ed.line = NULL;
	ed.done = false;
	return 1;
}

static int l_edit_cancel(lua_State *L)
{
	(void)L;
	if (ed.active) {
		rl_replace_line("", 0);
		rl_callback_handler_remove();
		ed.active = false;
		uv_poll_stop(&ed.poll);
	}
	ed.done = false;
	return 0;
}

static int l_edit_close(lua_State *L)
{
	l_edit_cancel(L);
	if (!ed.open)
		return 0;
	console_set_sink_guard(NULL, NULL);
	uv_signal_stop(&ed.winch);
	luaL_unref(L, LUA_REGISTRYINDEX, ed.complete_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, ed.thread_ref);
	ed.complete_ref = ed.thread_ref = LUA_NOREF;
	ed.T = NULL;
	ed.open = false;
	return 0;
}

void lvmm_edit_register(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "edit_open", l_edit_open },	  { "edit_prompt", l_edit_prompt }, { "edit_line", l_edit_line },
		{ "edit_cancel", l_edit_cancel }, { "edit_close", l_edit_close },   { NULL, NULL },
	};
	luaL_setfuncs(L, fns, 0);
}
