/* The decision whether /dev/kvm can run a standard guest, on facts handed in:
 * each kind of machine the VMM meets, without needing that machine. Then the
 * facts of this machine, gathered for real, must agree with what it has. */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "kvm_probe.h"

/* A /dev/kvm that works: API 12, every capability, KVM_CREATE_VM fine. */
static struct kvm_facts working_device(void)
{
	return (struct kvm_facts){
		.device_exists = true,
		.api_version = KVM_API_VERSION,
		.create_vm_tried = true,
	};
}

static struct kvm_verdict decide(struct kvm_facts f)
{
	struct kvm_verdict v;
	kvm_decide(&f, &v);
	return v;
}

static void test_kvm_amd_with_svm_is_usable(void)
{
	struct kvm_facts f = working_device();
	f.mod_kvm_amd = f.cpu_svm = true;
	struct kvm_verdict v = decide(f);
	CHECK(v.usable);
	CHECK(strcmp(v.backend, "kvm_amd") == 0);
	CHECK_CONTAINS(v.reason, "svm");
	CHECK(v.advice == NULL);
}

static void test_kvm_intel_with_vmx_is_usable(void)
{
	struct kvm_facts f = working_device();
	f.mod_kvm_intel = f.cpu_vmx = true;
	struct kvm_verdict v = decide(f);
	CHECK(v.usable);
	CHECK(strcmp(v.backend, "kvm_intel") == 0);
	CHECK_CONTAINS(v.reason, "vmx");
}

static void test_kvm_pvm_is_refused_with_its_name(void)
{
	struct kvm_facts f = working_device();
	f.mod_kvm_pvm = true;
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK(strcmp(v.backend, "kvm_pvm") == 0);
	CHECK_CONTAINS(v.reason, "kvm-pvm");
	CHECK_CONTAINS(v.reason, "kvm_pvm");
	CHECK_CONTAINS(v.advice, "test host");
	CHECK_CONTAINS(v.advice, KVM_FORCE_ENV "=1");
}

static void test_kvm_pvm_beside_a_vendor_module_is_refused(void)
{
	struct kvm_facts f = working_device();
	f.mod_kvm_pvm = f.mod_kvm_amd = f.cpu_svm = true;
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK(strcmp(v.backend, "kvm_pvm") == 0);
	CHECK_CONTAINS(v.reason, "kvm_pvm and kvm_amd");
}

static void test_forced_kvm_pvm_is_usable_and_says_so(void)
{
	struct kvm_facts f = working_device();
	f.mod_kvm_pvm = f.forced = true;
	struct kvm_verdict v = decide(f);
	CHECK(v.usable);
	CHECK(strcmp(v.backend, "kvm_pvm") == 0);
	CHECK_CONTAINS(v.reason, KVM_FORCE_ENV "=1");
}

static void test_no_device(void)
{
	struct kvm_facts f = { .api_version = -1, .mod_kvm_amd = true, .cpu_svm = true };
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK(strcmp(v.backend, "none") == 0);
	CHECK_CONTAINS(v.reason, "/dev/kvm does not exist");
	CHECK_CONTAINS(v.advice, "test host");
}

static void test_no_permission(void)
{
	struct kvm_facts f = { .device_exists = true, .open_errno = EACCES, .api_version = -1,
			       .mod_kvm_intel = true, .cpu_vmx = true };
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, "cannot open /dev/kvm");
	CHECK_CONTAINS(v.reason, strerror(EACCES));
	CHECK_CONTAINS(v.advice, "kvm");
}

static void test_no_driver_behind_the_node(void)
{
	struct kvm_facts f = { .device_exists = true, .open_errno = ENXIO, .api_version = -1 };
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, strerror(ENXIO));
	CHECK_CONTAINS(v.advice, "kvm_intel or kvm_amd");
}

static void test_wrong_api_version(void)
{
	struct kvm_facts f = working_device();
	f.api_version = 11;
	f.create_vm_tried = false;
	f.mod_kvm_amd = f.cpu_svm = true;
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, "API version 11");
}

static void test_missing_capability(void)
{
	struct kvm_facts f = working_device();
	f.missing_cap = "KVM_CAP_IRQFD";
	f.create_vm_tried = false;
	f.mod_kvm_intel = f.cpu_vmx = true;
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, "lacks KVM_CAP_IRQFD");
}

static void test_create_vm_failing(void)
{
	struct kvm_facts f = working_device();
	f.create_vm_errno = ENOMEM;
	f.mod_kvm_intel = f.cpu_vmx = true;
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, "KVM_CREATE_VM");
	CHECK_CONTAINS(v.reason, strerror(ENOMEM));
}

/* Forcing accepts a backend, never a device that does not work. */
static void test_forcing_does_not_hide_a_broken_device(void)
{
	struct kvm_facts f = { .api_version = -1, .mod_kvm_pvm = true, .forced = true };
	CHECK(!decide(f).usable);
	f = working_device();
	f.mod_kvm_pvm = f.forced = true;
	f.missing_cap = "KVM_CAP_PIT2";
	CHECK(!decide(f).usable);
}

/* Positive evidence only: a working device with no vendor module, or a
 * vendor module without its CPU flag, is an unknown backend. */
static void test_unknown_backends_are_refused(void)
{
	struct kvm_facts f = working_device();
	struct kvm_verdict v = decide(f);
	CHECK(!v.usable);
	CHECK(strcmp(v.backend, "unknown") == 0);
	CHECK_CONTAINS(v.reason, "neither kvm_intel nor kvm_amd");

	f.mod_kvm_amd = true; /* no svm flag */
	v = decide(f);
	CHECK(!v.usable);
	CHECK_CONTAINS(v.reason, "without the svm flag");

	f = working_device();
	f.mod_kvm_intel = true;
	f.cpu_svm = true; /* the wrong vendor's flag */
	CHECK(!decide(f).usable);

	f.forced = true;
	CHECK(decide(f).usable);
}

/* The facts gathered here match what this machine shows, and the verdict
 * follows them. */
static void test_gathered_facts_match_this_machine(void)
{
	struct kvm_facts f;
	int sys_fd = -2, vm_fd = -2;
	kvm_facts_gather(&f, &sys_fd, &vm_fd);
	CHECK(f.device_exists == (access("/dev/kvm", F_OK) == 0));
	CHECK(f.mod_kvm_pvm == (access("/sys/module/kvm_pvm", F_OK) == 0));
	CHECK(f.mod_kvm_amd == (access("/sys/module/kvm_amd", F_OK) == 0));
	CHECK(f.mod_kvm_intel == (access("/sys/module/kvm_intel", F_OK) == 0));
	if (f.device_exists && !f.open_errno) {
		CHECK(sys_fd >= 0);
		CHECK(f.api_version == KVM_API_VERSION);
		CHECK((vm_fd >= 0) == (f.create_vm_tried && !f.create_vm_errno));
	} else {
		CHECK(sys_fd == -1);
		CHECK(vm_fd == -1);
	}
	if (vm_fd >= 0)
		close(vm_fd);
	if (sys_fd >= 0)
		close(sys_fd);
	struct kvm_verdict v;
	kvm_decide(&f, &v);
	printf("this machine: %s (%s)\n", v.usable ? "usable" : "not usable", v.reason);
	if (f.mod_kvm_pvm && !f.forced)
		CHECK(!v.usable);
	/* In the test host (kvm_amd on TCG's emulated SVM), or on a real KVM. */
	if (sys_fd >= 0 && !f.mod_kvm_pvm && ((f.mod_kvm_amd && f.cpu_svm) || (f.mod_kvm_intel && f.cpu_vmx)))
		CHECK(v.usable);
}

int main(void)
{
	RUN(test_kvm_amd_with_svm_is_usable);
	RUN(test_kvm_intel_with_vmx_is_usable);
	RUN(test_kvm_pvm_is_refused_with_its_name);
	RUN(test_kvm_pvm_beside_a_vendor_module_is_refused);
	RUN(test_forced_kvm_pvm_is_usable_and_says_so);
	RUN(test_no_device);
	RUN(test_no_permission);
	RUN(test_no_driver_behind_the_node);
	RUN(test_wrong_api_version);
	RUN(test_missing_capability);
	RUN(test_create_vm_failing);
	RUN(test_forcing_does_not_hide_a_broken_device);
	RUN(test_unknown_backends_are_refused);
	RUN(test_gathered_facts_match_this_machine);
	return CHECK_DONE();
}
