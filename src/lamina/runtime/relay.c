/* lamina-relay: what stays resident of a detached container's monitor while its process runs.

   The Python monitor (lamina/runtime/relay.py) starts the container's process (runc run
   --detach, as a child subreaper, so that the process is its child) and then replaces itself
   with this program, keeping its PID and so its claim on the container. This program only
   waits: it copies the process's output to the container's json-file log (and to attached
   clients), copies an attached input into the terminal of a -t container, keeps open what it was
   given (the stdin FIFO of a -i container), and when the process has ended and its output is
   drained, replaces itself with the exit command (the Python side again: records the exit,
   restarts, removes a --rm container) with the exit code appended. A container's health check
   runs from here too (the runtime's exec of the probe each interval, its result recorded under
   Docker's rules, its events written: see "health checks" below), so that no interpreter runs
   for it at all.

   lamina-relay -p PID -l LOG [-o FD] [-e FD] [-m FD] [-i FD] [-O FD] [-E FD] [-k FD]...
                [-c MS -t MS -r N -s MS -S MS -P FILE -L FILE -H FILE -M TEXT -J FILE -A JSON
                 -x TEXT -a EXEC_WORD...] -- EXIT_COMMAND [ARG...]
     -p  the container's process, a child of this process
     -l  the json-file log ({"log":..., "stream":..., "time":...} a line, as Docker writes it)
     -o, -e  pipes from the process's stdout and stderr
     -m  the master of the process's terminal (its output is stdout; -i is copied into it)
     -O, -E  attached clients' stdout and stderr (dropped at the first failed write)
     -k  a file descriptor to keep open for the exit command; every other one above 2 is
         closed before it runs
     -c, -a  the health check: its interval in milliseconds, and the runtime's exec of the
         probe, a word each -a (it gets no file descriptor above 2)
     -t, -r, -s, -S  the probe's timeout (ms), the retries, the start period (ms), when the
         process started (ms since the epoch)
     -P, -L  the exec's pid file (the probe's process in the container, killed past the
         timeout) and the runtime's JSON log (its error when the probe could not start)
     -H  the health since the start, a JSON file (-M: the result's output past the timeout)
     -J, -A, -x  the events journal, the container's actor there (its JSON up to the end of
         its attributes: "ID":"...","Attributes":{"name":"..."), the probe's command line

   Built by lamina/runtime/relay.py with the system's C compiler; no library but libc. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define MAX_KEEP 16
#define MAX_PROBE_WORDS 64

static int log_fd = -1, to_out = -1, to_err = -1;

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if it is not one. */
static size_t utf8_length(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], low = 0x80, high = 0xBF;
	size_t length, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		length = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		length = 3;
		if (c == 0xE0)
			low = 0xA0;
		else if (c == 0xED)
			high = 0x9F; /* no UTF-16 surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		length = 4;
		if (c == 0xF0)
			low = 0x90;
		else if (c == 0xF4)
			high = 0x8F;
	} else
		return 0;
	if (n < length || p[1] < low || p[1] > high)
		return 0;
	for (i = 2; i < length; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return length;
}

/* The JSON string body of p at out (at most 6 bytes a byte); a byte that is not part of valid
   UTF-8 is written as the lone surrogate U+DC80+byte, as Python's surrogateescape reads it back
   (a log line), or with `replace` as U+FFFD, as Go's JSON writes a probe's output. */
static size_t escape(char *out, const unsigned char *p, size_t n, int replace)
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i];
		size_t length;

		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
			i++;
		} else if (c < 0x20) {
			*o++ = '\\';
			switch (c) {
			case '\n': *o++ = 'n'; break;
			case '\r': *o++ = 'r'; break;
			case '\t': *o++ = 't'; break;
			case '\b': *o++ = 'b'; break;
			case '\f': *o++ = 'f'; break;
			default:
				memcpy(o, "u00", 3);
				o += 3;
				*o++ = hex[c >> 4];
				*o++ = hex[c & 15];
			}
			i++;
		} else if (c < 0x80) {
			*o++ = (char)c;
			i++;
		} else if ((length = utf8_length(p + i, n - i)) != 0) {
			memcpy(o, p + i, length);
			o += length;
			i += length;
		} else if (replace) {
			memcpy(o, "\\ufffd", 6);
			o += 6;
			i++;
		} else {
			memcpy(o, "\\udc", 4);
			o += 4;
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
			i++;
		}
	}
	return (size_t)(o - out);
}

static void drop(int *fd)
{
	if (*fd == to_out)
		to_out = -1; /* one client's pipe may be both its stdout and stderr */
	if (*fd == to_err)
		to_err = -1;
	*fd = -1;
}

/* Output of the process: to the attached client of its stream and to the log, a log entry for
   each line (the last one may be partial), all stamped with the time it was read. */
static void emit(int stream, const unsigned char *p, size_t n)
{
	int *client = stream == 1 ? &to_out : &to_err;
	const char *name = stream == 1 ? "stdout" : "stderr";
	char stamp[64], *buffer, *o;
	struct timespec now;
	struct tm tm;
	size_t start = 0, i, lines = 1;

	if (*client >= 0 && write_all(*client, (const char *)p, n) < 0)
		drop(client);
	if (log_fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	i = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + i, sizeof(stamp) - i, ".%09ldZ", now.tv_nsec);
	for (i = 0; i < n; i++)
		lines += p[i] == '\n';
	buffer = malloc(n * 6 + lines * (64 + strlen(stamp)));
	if (buffer == NULL)
		return;
	o = buffer;
	for (i = 0; i <= n; i++) {
		if (i < n && p[i] != '\n')
			continue;
		if (i == n && start == n)
			break; /* nothing after the last newline */
		size_t end = i < n ? i + 1 : n;
		o += sprintf(o, "{\"log\":\"");
		o += escape(o, p + start, end - start, 0);
		o += sprintf(o, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n", name, stamp);
		start = end;
	}
	write_all(log_fd, buffer, (size_t)(o - buffer));
	free(buffer);
}

static void close_all_but(const int *keep, int kept)
{
	int fds[1024], count = 0, i, j;
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *entry;

	if (dir == NULL)
		return;
	while ((entry = readdir(dir)) != NULL && count < 1024) {
		int fd = atoi(entry->d_name);
		if (fd > 2 && fd != dirfd(dir))
			fds[count++] = fd;
	}
	closedir(dir);
	for (i = 0; i < count; i++) {
		for (j = 0; j < kept && keep[j] != fds[i]; j++)
			;
		if (j == kept)
			close(fds[i]);
	}
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

/* ------------------------------------------------------------------------------ health checks
   Docker's rules (lamina/runtime/health.py says them in full): a probe one interval after the
   start and then one interval after each has ended; exit 0 makes the container healthy and ends
   the failing streak; any other result adds to the streak, except while it is still starting
   within its start period, and RETRIES failures in a row make it unhealthy; past its timeout a
   probe is killed and its result is -1 with Docker's message; the last five results are kept,
   each with at most 4096 bytes of output ("..." after it when there was more). The state since
   the start is the file -H ({"Status", "FailingStreak", "Log"}, replaced whole through a
   rename), which lamina/runstate.py reads with what came before; the probe's exec events and
   each change of status go to the events journal (lamina/events.py's lines), so that a probe
   costs this process a fork and the runtime's exec, and no interpreter. */
#define MAX_OUTPUT 4096
#define MAX_LOG 5
#define EVENTS_LIMIT (2 << 20) /* lamina/events.py's LIMIT: the journal is rotated past it */

static struct {
	char *argv[MAX_PROBE_WORDS + 1]; /* runc exec --process FILE --pid-file FILE ... ID */
	int words, retries;
	long long interval, timeout, start_period; /* milliseconds */
	long long started; /* when the process started, milliseconds since the epoch */
	const char *pid_file, *runtime_log, *state, *timeout_message, *journal, *actor, *line;
	/* the probe under way */
	pid_t pid;
	int pidfd, out, timed_out, truncated;
	long long deadline; /* monotonic milliseconds */
	struct timespec start;
	size_t length;
	unsigned char output[MAX_OUTPUT];
	char exec_id[65];
	/* the results since the start */
	const char *status;
	int streak, entries;
	char *log[MAX_LOG];
} health = {.pidfd = -1, .out = -1, .retries = 3, .status = "starting"};

/* t as RFC 3339 in UTC with the fraction's trailing zeros dropped (Go's RFC3339Nano). */
static void rfc3339(char *out, size_t size, const struct timespec *t)
{
	char fraction[16];
	struct tm tm;
	size_t i;
	int n;

	gmtime_r(&t->tv_sec, &tm);
	i = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(fraction, sizeof(fraction), ".%09ld", t->tv_nsec);
	while (n > 1 && fraction[n - 1] == '0')
		n--;
	snprintf(out + i, size - i, "%.*sZ", n > 1 ? n : 0, fraction);
}

/* Rename a full journal (the inode ino) to JOURNAL.1, as lamina/events.py's _rotate: one
   process at a time, through a lock file made with O_EXCL (a stale one is events.py's to
   clear). */
static void rotate_journal(ino_t ino)
{
	size_t n = strlen(health.journal) + 16;
	char *lock = malloc(n), *old = malloc(n);
	struct stat st;
	int fd;

	if (lock != NULL && old != NULL) {
		snprintf(lock, n, "%s.rotating", health.journal);
		snprintf(old, n, "%s.1", health.journal);
		fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (stat(health.journal, &st) == 0 && st.st_ino == ino &&
			    st.st_size > EVENTS_LIMIT)
				rename(health.journal, old);
			close(fd);
			unlink(lock);
		}
	}
	free(lock);
	free(old);
}

/* One container event in the journal: ACTION (with `more`, if not NULL, after it) and
   `attributes` after the container's own (each ,"key":"value"), in one write. */
static void event(const char *action, const char *more, const char *attributes)
{
	size_t a = strlen(action), m = more ? strlen(more) : 0;
	char *text = malloc(a + m + 1), *line;
	struct timespec now;
	struct stat st;
	long long nano;
	int fd;
	char *o;

	if (health.journal == NULL || health.actor == NULL || text == NULL) {
		free(text);
		return;
	}
	memcpy(text, action, a);
	if (more)
		memcpy(text + a, more, m);
	line = malloc((a + m) * 6 + strlen(health.actor) + strlen(attributes) + 160);
	if (line == NULL) {
		free(text);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	nano = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
	o = line + sprintf(line, "{\"Type\":\"container\",\"Action\":\"");
	o += escape(o, (const unsigned char *)text, a + m, 0);
	o += sprintf(o, "\",\"Actor\":{%s%s}},\"scope\":\"local\",\"time\":%lld,\"timeNano\":%lld}\n",
		     health.actor, attributes, nano / 1000000000LL, nano);
	fd = open(health.journal, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		write_all(fd, line, (size_t)(o - line));
		if (fstat(fd, &st) == 0 && st.st_size > EVENTS_LIMIT) {
			close(fd);
			rotate_journal(st.st_ino);
		} else
			close(fd);
	}
	free(line);
	free(text);
}

/* Write the health since the start to the state file, through a rename. */
static void save_health(void)
{
	size_t size = 128, n = strlen(health.state) + 8;
	char *doc, *o, *partial = malloc(n);
	int i, fd;

	for (i = 0; i < health.entries; i++)
		size += strlen(health.log[i]) + 1;
	doc = malloc(size);
	if (doc == NULL || partial == NULL) {
		free(doc);
		free(partial);
		return;
	}
	o = doc + sprintf(doc, "{\"Status\":\"%s\",\"FailingStreak\":%d,\"Log\":[", health.status,
			  health.streak);
	for (i = 0; i < health.entries; i++)
		o += sprintf(o, "%s%s", i ? "," : "", health.log[i]);
	o += sprintf(o, "]}");
	snprintf(partial, n, "%s.tmp", health.state);
	fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		int failed = write_all(fd, doc, (size_t)(o - doc));
		close(fd);
		if (failed == 0)
			rename(partial, health.state);
		else
			unlink(partial);
	}
	free(doc);
	free(partial);
}

/* Add a result (its output already a JSON string body) and apply Docker's rules. */
static void record(int code, const char *output, const struct timespec *end)
{
	const char *before = health.status;
	char start[64], ended[64], *entry = malloc(strlen(output) + 200);

	if (entry == NULL)
		return;
	rfc3339(start, sizeof(start), &health.start);
	rfc3339(ended, sizeof(ended), end);
	sprintf(entry, "{\"Start\":\"%s\",\"End\":\"%s\",\"ExitCode\":%d,\"Output\":\"%s\"}", start,
		ended, code, output);
	if (health.entries == MAX_LOG) {
		free(health.log[0]);
		memmove(health.log, health.log + 1, sizeof(char *) * (MAX_LOG - 1));
		health.entries--;
	}
	health.log[health.entries++] = entry;
	if (code == 0) {
		health.streak = 0;
		health.status = "healthy";
	} else if (!(strcmp(health.status, "starting") == 0 &&
		     (long long)health.start.tv_sec * 1000 + health.start.tv_nsec / 1000000 -
		     health.started < health.start_period)) {
		if (++health.streak >= health.retries)
			health.status = "unhealthy";
	}
	save_health();
	if (strcmp(before, health.status) != 0)
		event("health_status: ", health.status, "");
}

/* The runtime's own error from its JSON log: the msg of its last "error" or "fatal" line (a
   JSON string body as it stands), less the prefixes lamina/runtime/oci.py's failure_from_log
   drops; NULL if there is none. */
static char *runtime_error(void)
{
	static const char *const prefixes[] = {"runc run failed: ", "runc exec failed: ",
					       "exec failed: ", "unable to start container process: "};
	char *text = malloc(CHUNK + 1), *line, *next, *found = NULL, *copy;
	size_t found_length = 0, i;
	ssize_t got;
	int fd = open(health.runtime_log, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || text == NULL) {
		if (fd >= 0)
			close(fd);
		free(text);
		return NULL;
	}
	got = read(fd, text, CHUNK);
	close(fd);
	text[got > 0 ? got : 0] = '\0';
	for (line = text; *line; line = next) {
		char *msg, *p;
		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		if (!memmem(line, (size_t)(next - line), "\"level\":\"error\"", 15) &&
		    !memmem(line, (size_t)(next - line), "\"level\":\"fatal\"", 15))
			continue;
		msg = memmem(line, (size_t)(next - line), "\"msg\":\"", 7);
		if (msg == NULL)
			continue;
		for (p = msg + 7; p < next && *p != '"'; p++)
			if (*p == '\\')
				p++;
		found = msg + 7;
		found_length = (size_t)(p - found);
	}
	if (found == NULL) {
		free(text);
		return NULL;
	}
	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t n = strlen(prefixes[i]);
		if (found_length >= n && strncmp(found, prefixes[i], n) == 0) {
			found += n;
			found_length -= n;
		}
	}
	copy = strndup(found, found_length);
	free(text);
	return copy;
}

/* Start a probe: its exec events, then the runtime's exec with no input and its stdout and
   stderr into one pipe, every signal as a fresh process has it and no other file descriptor. */
static void probe_start(void)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char random[32] = {0};
	int pipe_fds[2], fd, i;
	sigset_t none;
	pid_t child;

	clock_gettime(CLOCK_REALTIME, &health.start);
	if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random))
		for (i = 0; i < 32; i++)
			random[i] = (unsigned char)(rand() ^ health.start.tv_nsec >> (i % 24));
	for (i = 0; i < 32; i++) {
		health.exec_id[2 * i] = hex[random[i] >> 4];
		health.exec_id[2 * i + 1] = hex[random[i] & 15];
	}
	health.exec_id[64] = '\0';
	unlink(health.pid_file);
	fd = open(health.runtime_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	health.length = 0;
	health.truncated = health.timed_out = 0;
	health.deadline = now_ms() + health.timeout;
	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return;
	child = fork();
	if (child == 0) {
		int null = open("/dev/null", O_RDONLY);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(null, 0);
		dup2(pipe_fds[1], 1);
		dup2(pipe_fds[1], 2);
		close_all_but(NULL, 0);
		execvp(health.argv[0], health.argv);
		_exit(127);
	}
	close(pipe_fds[1]);
	if (child < 0) {
		close(pipe_fds[0]);
		return;
	}
	{
		char attributes[96];
		snprintf(attributes, sizeof(attributes), ",\"execID\":\"%s\"", health.exec_id);
		event("exec_create: ", health.line, attributes);
		event("exec_start: ", health.line, attributes);
	}
	health.pid = child;
	health.out = pipe_fds[0];
	health.pidfd = (int)syscall(SYS_pidfd_open, child, 0); /* -1: its output's end tells */
}

/* Its output, the first MAX_OUTPUT bytes kept; read(2)'s result (at 0 or an error other than
   EINTR or EAGAIN, the pipe is closed). */
static ssize_t probe_read(void)
{
	unsigned char chunk[CHUNK];
	ssize_t got = read(health.out, chunk, sizeof(chunk));
	size_t keep;

	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return got;
	if (got <= 0) {
		close(health.out);
		health.out = -1;
		return got;
	}
	keep = MAX_OUTPUT - health.length < (size_t)got ? MAX_OUTPUT - health.length : (size_t)got;
	memcpy(health.output + health.length, chunk, keep);
	health.length += keep;
	if (keep < (size_t)got)
		health.truncated = 1;
	return got;
}

/* Past its timeout: kill the probe's process in the container (named in the pid file) and the
   runtime's exec, which may have been waiting only for what holds the output open (runc copies
   it until its end: a probe's background child keeps it open), and wait for it to end. */
static void probe_kill(void)
{
	char text[32] = "";
	int fd = open(health.pid_file, O_RDONLY | O_CLOEXEC), target = 0;

	if (fd >= 0) {
		ssize_t got = read(fd, text, sizeof(text) - 1);
		close(fd);
		text[got > 0 ? got : 0] = '\0';
		target = atoi(text);
	}
	if (target > 0)
		kill(target, SIGKILL);
	kill(health.pid, SIGKILL);
	health.timed_out = 1;
}

/* The probe's runtime has ended: its result recorded, unless the container's process has ended
   meanwhile (`dropped`): then the exit decides, as Docker drops a probe under way at a stop. */
static void probe_end(int dropped)
{
	struct timespec end;
	int status = 0, code;
	char attributes[128], *output;

	while (waitpid(health.pid, &status, 0) < 0 && errno == EINTR)
		;
	if (health.out >= 0) { /* what it wrote is in the pipe by now (what may still hold the
				  pipe open is not the probe) */
		ssize_t got;
		fcntl(health.out, F_SETFL, O_NONBLOCK);
		while ((got = probe_read()) > 0 || (got < 0 && errno == EINTR))
			;
		if (health.out >= 0) {
			close(health.out);
			health.out = -1;
		}
	}
	if (health.pidfd >= 0)
		close(health.pidfd);
	health.pidfd = -1;
	health.pid = 0;
	clock_gettime(CLOCK_REALTIME, &end);
	code = status_code(status);
	output = NULL;
	if (health.timed_out)
		code = -1;
	else if (access(health.pid_file, F_OK) != 0) { /* the runtime never started it */
		code = -1;
		output = runtime_error();
	}
	snprintf(attributes, sizeof(attributes), ",\"execID\":\"%s\",\"exitCode\":\"%d\"",
		 health.exec_id, code);
	event("exec_die", NULL, attributes);
	if (dropped) {
		free(output);
		return;
	}
	if (output == NULL) {
		const char *text = health.timed_out ? health.timeout_message : (char *)health.output;
		size_t n = health.timed_out ? strlen(text) : health.length;
		output = malloc(n * 6 + 4);
		if (output == NULL)
			return;
		n = escape(output, (const unsigned char *)text, n, 1);
		if (health.truncated && !health.timed_out) {
			memcpy(output + n, "...", 3);
			n += 3;
		}
		output[n] = '\0';
	}
	record(code, output, &end);
	free(output);
}


int main(int argc, char **argv)
{
	int pid = 0, out = -1, err = -1, master = -1, in = -1, keep[MAX_KEEP], kept = 0;
	int opt, code = -1, exited = 0, pidfd;
	long long due = 0;
	const char *log_path = NULL;
	char **command, *buffer = malloc(CHUNK);
	char number[16];

	while ((opt = getopt(argc, argv, "+p:l:o:e:m:i:O:E:k:c:a:t:r:s:S:P:L:H:M:J:A:x:")) != -1) {
		int value = optarg ? atoi(optarg) : -1;
		switch (opt) {
		case 'p': pid = value; break;
		case 'l': log_path = optarg; break;
		case 'o': out = value; break;
		case 'e': err = value; break;
		case 'm': master = value; break;
		case 'i': in = value; break;
		case 'O': to_out = value; break;
		case 'E': to_err = value; break;
		case 'k':
			if (kept < MAX_KEEP)
				keep[kept++] = value;
			break;
		case 'c': health.interval = atoll(optarg); break;
		case 'a':
			if (health.words < MAX_PROBE_WORDS)
				health.argv[health.words++] = optarg;
			break;
		case 't': health.timeout = atoll(optarg); break;
		case 'r': health.retries = value; break;
		case 's': health.start_period = atoll(optarg); break;
		case 'S': health.started = atoll(optarg); break;
		case 'P': health.pid_file = optarg; break;
		case 'L': health.runtime_log = optarg; break;
		case 'H': health.state = optarg; break;
		case 'M': health.timeout_message = optarg; break;
		case 'J': health.journal = optarg; break;
		case 'A': health.actor = optarg; break;
		case 'x': health.line = optarg; break;
		default:
			return 2;
		}
	}
	if (pid <= 0 || optind >= argc || buffer == NULL) {
		fprintf(stderr, "usage: lamina-relay -p PID -l LOG [FD options] -- EXIT_COMMAND...\n");
		return 2;
	}
	command = argv + optind;
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	if (log_path != NULL)
		log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	health.argv[health.words] = NULL;
	if (health.words == 0 || health.pid_file == NULL || health.runtime_log == NULL ||
	    health.state == NULL || health.timeout_message == NULL || health.line == NULL)
		health.interval = 0; /* no health check */
	due = now_ms() + health.interval;

	while (!exited) {
		struct pollfd fds[7];
		int n = 0, i, status, timeout = -1;

		fds[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = out, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = err, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = master, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = in, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = health.pidfd, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = health.out, .events = POLLIN};
		if (health.interval > 0 && health.pid == 0) {
			long long left = due - now_ms();
			if (left <= 0) {
				probe_start();
				if (health.pid == 0)
					due = now_ms() + health.interval;
				continue;
			}
			timeout = left > 1000000000 ? 1000000000 : (int)left;
		} else if (health.pid != 0 && !health.timed_out) {
			long long left = health.deadline - now_ms();
			if (left <= 0) {
				probe_kill();
				continue;
			}
			timeout = left > 1000000000 ? 1000000000 : (int)left;
		}
		if (pidfd < 0) { /* gone before we looked (or no pidfd): only waitpid can tell */
			int w = waitpid(pid, &status, 0);
			code = w == pid ? status_code(status) : 255;
			break;
		}
		if (poll(fds, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 1; i < 5; i++) {
			ssize_t got;
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(fds[i].fd, buffer, CHUNK);
			if (got < 0 && errno == EINTR)
				continue;
			if (i == 4) { /* attached input, into the terminal */
				if (got <= 0 || master < 0 || write_all(master, buffer, (size_t)got) < 0)
					in = -1; /* end of input: a terminal cannot be closed */
			} else if (got <= 0) {
				if (i == 1) out = -1;
				if (i == 2) err = -1;
				if (i == 3) master = -1; /* every end of the terminal is closed */
			} else
				emit(i == 2 ? 2 : 1, (unsigned char *)buffer, (size_t)got);
		}
		if (fds[6].fd >= 0 && (fds[6].revents & (POLLIN | POLLHUP | POLLERR)))
			probe_read();
		if (health.pid != 0 && ((fds[5].fd >= 0 && (fds[5].revents & POLLIN)) ||
					(health.pidfd < 0 && health.out < 0))) {
			/* The probe has ended (or, without a pidfd, closed its output): its result
			   recorded unless the process has ended too (its exit decides), the next one an
			   interval from now. What it left behind (runc's orphans) comes to this
			   subreaper too; the container's process may be among them, and its status is
			   then the one kept. */
			struct pollfd ended = {.fd = pidfd, .events = POLLIN};
			int w;
			probe_end(poll(&ended, 1, 0) > 0);
			due = now_ms() + health.interval;
			while ((w = waitpid(-1, &status, WNOHANG)) > 0)
				if (w == pid) {
					code = status_code(status);
					exited = 1;
				}
		}
		if (!exited && (fds[0].revents & POLLIN)) {
			/* It has ended: its status is ours at once, or soon (pidfd_open's readiness may
			   come a moment before the zombie can be waited for). */
			int w;
			while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
				;
			if (w == pid)
				code = status_code(status);
			exited = 1;
		}
	}
	if (code < 0)
		code = 255; /* not our child after all: its status went elsewhere */
	if (health.pid != 0) /* a probe under way: soon ended with the container, and not counted */
		probe_end(1);
	/* What the process wrote before it ended is still in the pipes or the terminal. */
	while (out >= 0 || err >= 0 || master >= 0) {
		struct pollfd fds[3] = {{.fd = out, .events = POLLIN}, {.fd = err, .events = POLLIN},
					{.fd = master, .events = POLLIN}};
		int i, ready = poll(fds, 3, master >= 0 && out < 0 && err < 0 ? 0 : 500);
		if (ready <= 0)
			break; /* a terminal has nothing more, or what holds a pipe is not the process */
		for (i = 0; i < 3; i++) {
			ssize_t got;
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			got = read(fds[i].fd, buffer, CHUNK);
			if (got > 0)
				emit(i == 1 ? 2 : 1, (unsigned char *)buffer, (size_t)got);
			else if (i == 0)
				out = -1;
			else if (i == 1)
				err = -1;
			else
				master = -1;
		}
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	close_all_but(keep, kept);
	snprintf(number, sizeof(number), "%d", code);
	{
		int count = argc - optind, i;
		char **args = calloc((size_t)count + 2, sizeof(char *));
		if (args == NULL)
			return code;
		for (i = 0; i < count; i++)
			args[i] = command[i];
		args[count] = number;
		execv(args[0], args);
		fprintf(stderr, "lamina-relay: cannot run %s: %s\n", args[0], strerror(errno));
	}
	return code;
}
