#include "runtime/instrument/nvtx.h"

#include <nvtx3/nvToolsExt.h>

namespace cpscope::rt::instrument {
namespace {

// One domain for the process, created on first use (NVTX domains are process-wide registrations; the
// handle never changes afterwards, so this is not mutable state).
nvtxDomainHandle_t domain() {
  static const nvtxDomainHandle_t d = nvtxDomainCreateA("cpscope");
  return d;
}

nvtxEventAttributes_t attributes(const char* message) {
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.messageType = NVTX_MESSAGE_TYPE_ASCII;
  a.message.ascii = message;
  return a;
}

}  // namespace

// nvtxDomainRangePushEx/Pop return the nesting level, or a negative value when no tool is attached or
// the tool rejects the call; either way there is nothing for cpscope to act on, so they are not checked.
NvtxRange::NvtxRange(const std::string& message) {
  const nvtxEventAttributes_t a = attributes(message.c_str());
  nvtxDomainRangePushEx(domain(), &a);
}

NvtxRange::NvtxRange(const char* message, std::uint64_t payload) {
  nvtxEventAttributes_t a = attributes(message);
  a.payloadType = NVTX_PAYLOAD_TYPE_UNSIGNED_INT64;
  a.payload.ullValue = payload;
  nvtxDomainRangePushEx(domain(), &a);
}

NvtxRange::~NvtxRange() { nvtxDomainRangePop(domain()); }

}  // namespace cpscope::rt::instrument
