# The checkout services as a static library (checkout_core), shared by
# saga-checkout (examples/checkout) and its unit tests (tests/checkout), which
# may be configured first or alone (the sanitizer build has no examples).
if(TARGET checkout_core)
  return()
endif()
pkg_check_modules(H2O REQUIRED IMPORTED_TARGET libh2o)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)

# The services as a static library: the binary and the unit tests link it.
set(CK_DIR ${PROJECT_SOURCE_DIR}/examples/checkout)
add_library(checkout_core STATIC
  ${CK_DIR}/boot.c ${CK_DIR}/db.c ${CK_DIR}/util.c ${CK_DIR}/http.c ${CK_DIR}/api.c
  ${CK_DIR}/api_order.c ${CK_DIR}/api_query.c ${CK_DIR}/api_pay.c
  ${CK_DIR}/svc_order.c ${CK_DIR}/svc_cart.c ${CK_DIR}/svc_inventory.c
  ${CK_DIR}/svc_payment.c ${CK_DIR}/svc_fulfil.c ${CK_DIR}/gateway.c
  ${CK_DIR}/ckpt.c)
target_include_directories(checkout_core PUBLIC ${CK_DIR})
# h2o.h does not compile under strict C11.
set_target_properties(checkout_core PROPERTIES C_STANDARD 11 C_EXTENSIONS ON)
target_compile_options(checkout_core PRIVATE ${SAGA_WARN} -Wno-missing-prototypes)
target_compile_definitions(checkout_core PUBLIC _GNU_SOURCE)
target_link_libraries(checkout_core PUBLIC saga PkgConfig::H2O PkgConfig::UV
  PkgConfig::JANSSON PkgConfig::SQLITE3 m)
# GET /metrics, the operator console and JSON-lines logs (tools/console).
if(TARGET saga_console)
  target_link_libraries(checkout_core PUBLIC saga_console)
  target_compile_definitions(checkout_core PRIVATE CK_HAVE_CONSOLE)
endif()
# --transport kafka://... (the seed's topics on Kafka), when built.
if(SAGA_WITH_KAFKA)
  target_compile_definitions(checkout_core PRIVATE CK_WITH_KAFKA)
  target_link_libraries(checkout_core PUBLIC saga_kafka)
endif()

# --store postgres://... (every service in its own schema), when built.
if(SAGA_WITH_POSTGRES)
  target_compile_definitions(checkout_core PRIVATE CK_WITH_PG)
  target_link_libraries(checkout_core PUBLIC PkgConfig::PQ)
endif()
