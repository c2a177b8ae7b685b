/* A container's file watcher for the tests (Debian's busybox-static has no inotifyd): watches
   each DIR given and prints one line per event as busybox inotifyd does, "EVENT\tDIR\tNAME"
   (no NAME for the folder itself), EVENT being inotifyd's letters: c (modified), a (metadata),
   w (closed after writing), n (created), d (deleted), m (moved in), y (moved out).
   Built static by tests/watchkit.py. */
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>

static const struct { unsigned mask; char letter; } letters[] = {
    {IN_MODIFY, 'c'}, {IN_ATTRIB, 'a'}, {IN_CLOSE_WRITE, 'w'}, {IN_CREATE, 'n'},
    {IN_DELETE, 'd'}, {IN_MOVED_TO, 'm'}, {IN_MOVED_FROM, 'y'},
};

int main(int argc, char **argv) {
    int fd = inotify_init();
    const char *dirs[64];
    for (int i = 1; i < argc && i < 64; i++) {
        int wd = inotify_add_watch(fd, argv[i], IN_ALL_EVENTS);
        if (wd < 0 || wd >= 64) { perror(argv[i]); return 1; }
        dirs[wd] = argv[i];
    }
    printf("watching\n");
    fflush(stdout);
    char buf[65536] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 1;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            for (unsigned i = 0; i < sizeof letters / sizeof letters[0]; i++) {
                if (!(e->mask & letters[i].mask)) continue;
                if (e->len) printf("%c\t%s\t%s\n", letters[i].letter, dirs[e->wd], e->name);
                else printf("%c\t%s\n", letters[i].letter, dirs[e->wd]);
            }
            fflush(stdout);
            p += sizeof *e + e->len;
        }
    }
}
