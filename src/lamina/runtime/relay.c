/* lamina-relay: what stays resident of a detached container's monitor while its process runs.

   The Python monitor (lamina/runtime/relay.py) starts the container's process (runc run
   --detach, as a child subreaper, so that the process is its child) and then replaces itself
   with this program, keeping its PID and so its claim on the container. This program only
   waits: it copies the process's output to the container's json-file log (and to attached
   clients), copies an attached input into the terminal of a -t container, keeps open what it was
   given (the stdin FIFO of a -i container), and when the process has ended and its output is
   drained, replaces itself with the exit command (the Python side again: records the exit,
   restarts, removes a --rm container) with the exit code appended. A container with a health
   check also has its probe command run from here, one interval after the start and then one
   interval after each probe has ended (a short-lived Python process: it runs the probe in the
   container and records the result), so that no interpreter stays resident for it either.

   lamina-relay -p PID -l LOG [-o FD] [-e FD] [-m FD] [-i FD] [-O FD] [-E FD] [-k FD]...
                [-c MS -a PROBE_WORD...] -- EXIT_COMMAND [ARG...]
     -p  the container's process, a child of this process
     -l  the json-file log ({"log":..., "stream":..., "time":...} a line, as Docker writes it)
     -o, -e  pipes from the process's stdout and stderr
     -m  the master of the process's terminal (its output is stdout; -i is copied into it)
     -O, -E  attached clients' stdout and stderr (dropped at the first failed write)
     -k  a file descriptor to keep open for the exit command; every other one above 2 is
         closed before it runs
     -c, -a  the health check: its interval in milliseconds, and its command, a word each -a
         (it gets no file descriptor above 2; the exit command waits for a probe under way)

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

/* The line's JSON string body at out; a byte that is not part of valid UTF-8 is written as
   the lone surrogate U+DC80+byte, as Python's surrogateescape reads it back. */
static size_t escape(char *out, const unsigned char *p, size_t n)
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
		o += escape(o, p + start, end - start);
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

/* Start the probe command: a child with every signal as a fresh process has it and no file
   descriptor but 0-2; its PID, 0 if it could not start. */
static pid_t start_probe(char **words)
{
	sigset_t none;
	pid_t child = fork();

	if (child != 0)
		return child < 0 ? 0 : child;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	close_all_but(NULL, 0);
	execv(words[0], words);
	_exit(127);
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

int main(int argc, char **argv)
{
	int pid = 0, out = -1, err = -1, master = -1, in = -1, keep[MAX_KEEP], kept = 0;
	int opt, code = -1, exited = 0, pidfd, probe_fd = -1, words = 0;
	long long interval = 0, due = 0;
	pid_t probe = 0;
	const char *log_path = NULL;
	char **command, *buffer = malloc(CHUNK), *probe_argv[MAX_PROBE_WORDS + 1];
	char number[16];

	while ((opt = getopt(argc, argv, "+p:l:o:e:m:i:O:E:k:c:a:")) != -1) {
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
		case 'c': interval = atoll(optarg); break;
		case 'a':
			if (words < MAX_PROBE_WORDS)
				probe_argv[words++] = optarg;
			break;
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
	probe_argv[words] = NULL;
	if (words == 0)
		interval = 0; /* no health check */
	due = now_ms() + interval;

	while (!exited) {
		struct pollfd fds[6];
		int n = 0, i, status, timeout = -1;

		fds[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = out, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = err, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = master, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = in, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = probe_fd, .events = POLLIN};
		if (interval > 0 && probe == 0) {
			long long left = due - now_ms();
			if (left <= 0) {
				probe = start_probe(probe_argv);
				probe_fd = probe ? (int)syscall(SYS_pidfd_open, probe, 0) : -1;
				if (probe && probe_fd < 0) { /* no pidfd: wait for it here */
					waitpid(probe, NULL, 0);
					probe = 0;
				}
				if (probe == 0)
					due = now_ms() + interval;
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
		if (probe_fd >= 0 && (fds[5].revents & POLLIN)) {
			/* The probe has ended: the next one an interval from now. What it left behind
			   (runc's orphans) comes to this subreaper too; the container's process may be
			   among them, and its status is then the one kept. */
			int w;
			waitpid(probe, NULL, 0);
			close(probe_fd);
			probe_fd = -1;
			probe = 0;
			due = now_ms() + interval;
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
	if (probe) /* a probe under way ends within its timeout; it records before the exit does */
		waitpid(probe, NULL, 0);
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
