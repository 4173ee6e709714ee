#include "kvm_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* What the VMM needs of KVM, beyond the API version. */
static const struct { int cap; const char *name; } required_caps[] = {
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD" },
	{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD" },
	{ KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING" },
};

static bool module_loaded(const char *name)
{
	char path[64];
	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return access(path, F_OK) == 0;
}

/* Whether the space-separated word list `list` holds `word`. */
static bool has_word(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
		bool starts = p == list || p[-1] == ' ' || p[-1] == '\t';
		bool ends = p[n] == '\0' || p[n] == ' ' || p[n] == '\n' || p[n] == '\t';
		if (starts && ends)
			return true;
	}
	return false;
}

/* The vmx and svm flags of the first CPU in /proc/cpuinfo. */
static void read_cpu_flags(struct kvm_facts *f)
{
	FILE *in = fopen("/proc/cpuinfo", "re");
	if (!in)
		return;
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, in) > 0) {
		if (strncmp(line, "flags", 5) != 0 || !strchr(line, ':'))
			continue;
		const char *list = strchr(line, ':') + 1;
		f->cpu_vmx = has_word(list, "vmx");
		f->cpu_svm = has_word(list, "svm");
		break;
	}
	free(line);
	fclose(in);
}

static void ask_device(struct kvm_facts *f, int sys_fd, int *vm_fd)
{
	f->api_version = ioctl(sys_fd, KVM_GET_API_VERSION, 0);
	if (f->api_version != KVM_API_VERSION)
		return;
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
		if (ioctl(sys_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			f->missing_cap = required_caps[i].name;
			return;
		}
	f->create_vm_tried = true;
	int fd = ioctl(sys_fd, KVM_CREATE_VM, 0);
	if (fd < 0) {
		f->create_vm_errno = errno;
		return;
	}
	if (vm_fd)
		*vm_fd = fd;
	else
		close(fd);
}

void kvm_facts_gather(struct kvm_facts *f, int *sys_fd, int *vm_fd)
{
	*f = (struct kvm_facts){ .api_version = -1 };
	if (sys_fd)
		*sys_fd = -1;
	if (vm_fd)
		*vm_fd = -1;
	f->mod_kvm_intel = module_loaded("kvm_intel");
	f->mod_kvm_amd = module_loaded("kvm_amd");
	f->mod_kvm_pvm = module_loaded("kvm_pvm");
	read_cpu_flags(f);
	const char *force = getenv(KVM_FORCE_ENV);
	f->forced = force && strcmp(force, "1") == 0;

	f->device_exists = access("/dev/kvm", F_OK) == 0;
	if (!f->device_exists)
		return;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		f->open_errno = errno;
		return;
	}
	ask_device(f, fd, vm_fd);
	if (sys_fd)
		*sys_fd = fd;
	else
		close(fd);
}

#define SAY(...) snprintf(v->reason, sizeof(v->reason), __VA_ARGS__)

#define ADVICE_TESTHOST_SHORT "run it in the nested-KVM test host (scripts/testhost CMD)"
#define ADVICE_TESTHOST \
	"run it in the nested-KVM test host (scripts/testhost CMD, or VMM_TESTHOST=always for the project's scripts)"

void kvm_decide(const struct kvm_facts *f, struct kvm_verdict *v)
{
	*v = (struct kvm_verdict){ .usable = false, .backend = "none" };
	if (!f->device_exists) {
		SAY("/dev/kvm does not exist: KVM is not available on this machine");
		v->advice = "load kvm_intel or kvm_amd, or " ADVICE_TESTHOST_SHORT;
		return;
	}
	if (f->open_errno) {
		SAY("cannot open /dev/kvm: %s", strerror(f->open_errno));
		v->advice = f->open_errno == EACCES || f->open_errno == EPERM
				    ? "run as root or as a member of the group that owns /dev/kvm (kvm)"
				    : "load kvm_intel or kvm_amd, or " ADVICE_TESTHOST_SHORT;
		return;
	}
	if (f->api_version != KVM_API_VERSION) {
		SAY("/dev/kvm has KVM API version %d, this VMM needs %d", f->api_version, KVM_API_VERSION);
		v->advice = ADVICE_TESTHOST;
		return;
	}
	if (f->missing_cap) {
		SAY("/dev/kvm lacks %s, which this VMM needs", f->missing_cap);
		v->advice = ADVICE_TESTHOST;
		return;
	}
	if (f->create_vm_tried && f->create_vm_errno) {
		SAY("/dev/kvm cannot create a VM: KVM_CREATE_VM: %s", strerror(f->create_vm_errno));
		v->advice = ADVICE_TESTHOST;
		return;
	}

	/* The device works: which backend serves it? */
	bool intel = f->mod_kvm_intel && f->cpu_vmx, amd = f->mod_kvm_amd && f->cpu_svm;
	const char *vendor = intel ? "kvm_intel" : amd ? "kvm_amd" : NULL;
	if (f->mod_kvm_pvm) {
		v->backend = "kvm_pvm";
		if (vendor)
			SAY("/dev/kvm may be kvm-pvm: both kvm_pvm and %s are loaded, and kvm-pvm runs only "
			    "PVM guest kernels",
			    vendor);
		else
			SAY("/dev/kvm is kvm-pvm (module kvm_pvm), which runs only PVM guest kernels");
	} else if (vendor) {
		v->usable = true;
		v->backend = vendor;
		SAY("%s on a CPU with %s", vendor, intel ? "vmx" : "svm");
		return;
	} else {
		v->backend = "unknown";
		if (f->mod_kvm_intel || f->mod_kvm_amd)
			SAY("/dev/kvm works, but %s is loaded on a CPU without the %s flag: an unknown KVM backend",
			    f->mod_kvm_intel ? "kvm_intel" : "kvm_amd", f->mod_kvm_intel ? "vmx" : "svm");
		else
			SAY("/dev/kvm works, but neither kvm_intel nor kvm_amd is loaded: an unknown KVM backend");
	}
	if (f->forced) {
		/* The user vouches for the guest kernel. */
		SAY("%s, which %s, accepted by %s=1", v->backend,
		    f->mod_kvm_pvm ? "runs only PVM guest kernels" : "this check does not know", KVM_FORCE_ENV);
		v->usable = true;
		return;
	}
	v->advice = ADVICE_TESTHOST "; or set " KVM_FORCE_ENV "=1 if the guest kernel is built for it";
}

void kvm_probe(struct kvm_verdict *v)
{
	struct kvm_facts f;
	kvm_facts_gather(&f, NULL, NULL);
	kvm_decide(&f, v);
}
