// The store's side of secrets, on a real Postgres: with a SecretBox no env
// value is written in clear; what an older hoistd (without the key) wrote in
// clear, and what is sealed under an older key, is sealed again under the
// current one by SealStoredSecrets, the data migration hoistd runs at start.

#include <sys/stat.h>

#include <fstream>
#include <string>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "controller/store/embedded_migrations.h"
#include "controller/store/migration.h"
#include "controller/store/pg_migrator.h"
#include "controller/store/pg_pool.h"
#include "controller/store/pg_rollout_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "shared/pg.h"
#include "shared/secret_box.h"
#include "tests/fixtures/migrated_postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "pg-pass-Wq93kdL0x";

std::unique_ptr<SecretBox> Box(char fill) {
  auto box = SecretBox::FromKeys({std::string(32, fill)});
  EXPECT_TRUE(box.ok());
  return box.ok() ? std::move(*box) : nullptr;
}

class SealedStoreTest : public MigratedPostgresTest {
 protected:
  void SetUp() override {
    MigratedPostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    pool_ = std::make_unique<PgPool>(*WithConnectionDefaults(url_), 2);
    epoch_ = BumpEpoch();
  }

  // Every byte of the two tables that hold env values, as text.
  std::string Raw() {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    std::string out;
    for (const auto& row : tx.exec("SELECT manifest_yaml FROM deployments")) out += row[0].as<std::string>();
    for (const auto& row : tx.exec("SELECT encode(action, 'escape') FROM rollout_steps WHERE action IS NOT NULL")) {
      out += row[0].as<std::string>();
    }
    return out;
  }

  // A deployment and a rollout with one start step, written by `store`.
  void Write(PgRolloutStore* store, const std::string& name) {
    rollout::StoredDeployment d{name, absl::StrCat("deployment: ", name, "\nservices:\n  api:\n    env:\n      PW: ", kSecret, "\n"),
                                "sha", "stack.yaml", "", {}};
    ASSERT_TRUE(store->PutDeployment(epoch_, d).ok());
    rollout::StoredRollout r;
    r.id = name + "-r1";
    r.deployment = name;
    r.kind = "deploy";
    r.to_version = "1.0.0";
    rollout::StoredStep step;
    step.seq = 1;
    step.step_id = name + "-s1";
    step.kind = rollout::StepKind::kStartInstance;
    step.phase_name = "start";
    step.agent_id = "host-1";
    step.description = "start api";
    step.timeout = absl::Minutes(1);
    hoist::v1::Step action;
    action.set_step_id(step.step_id);
    (*action.mutable_start_instance()->mutable_spec()->mutable_env())["PW"] = kSecret;
    step.action = action;
    ASSERT_TRUE(store->CreateRollout(epoch_, r, {step}).ok());
    // Unlock the deployment for the next rollout of another test step.
    pqxx::connection c(url_);
    pqxx::work tx(c);
    tx.exec_params0("DELETE FROM deploy_locks WHERE deployment = $1", name);
    tx.commit();
  }

  void ExpectReadsBack(PgRolloutStore* store, const std::string& name) {
    auto d = store->GetDeployment(name);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_THAT(d->manifest_yaml, HasSubstr(kSecret));
    auto steps = store->GetSteps(name + "-r1");
    ASSERT_TRUE(steps.ok()) << steps.status();
    ASSERT_EQ(steps->size(), 1u);
    EXPECT_EQ(steps->at(0).action->start_instance().spec().env().at("PW"), kSecret);
  }

  std::unique_ptr<PgPool> pool_;
  uint64_t epoch_ = 0;
};

TEST_F(SealedStoreTest, WithAKeyNothingIsWrittenInClearAndEverythingReadsBack) {
  auto box = Box('k');
  PgRolloutStore store(pool_.get(), box.get());
  ASSERT_NO_FATAL_FAILURE(Write(&store, "shop"));
  EXPECT_THAT(Raw(), Not(HasSubstr(kSecret)));
  EXPECT_THAT(Raw(), HasSubstr("hoist:sealed:v1:"));
  ExpectReadsBack(&store, "shop");
  // A hoistd without the key says what it lacks instead of guessing.
  PgRolloutStore keyless(pool_.get());
  auto d = keyless.GetDeployment("shop");
  EXPECT_TRUE(absl::IsFailedPrecondition(d.status())) << d.status();
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("--secrets-key-file"));
}

TEST_F(SealedStoreTest, ClearValuesOfAnOlderHoistdAndValuesUnderAnOldKeyAreSealedAgainAtStart) {
  PgRolloutStore clear(pool_.get());
  ASSERT_NO_FATAL_FAILURE(Write(&clear, "old"));
  ASSERT_THAT(Raw(), HasSubstr(kSecret)) << "the clear store must write clear values for this test to mean anything";
  auto first = Box('a');
  PgRolloutStore sealed(pool_.get(), first.get());
  auto n = sealed.SealStoredSecrets();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2) << "one manifest and one step";
  EXPECT_THAT(Raw(), Not(HasSubstr(kSecret)));
  ExpectReadsBack(&sealed, "old");
  auto again = sealed.SealStoredSecrets();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0) << "a second start has nothing to do";

  // Rotation: the new key first, the old one below; everything moves to the new key.
  auto rotated_keys = SecretBox::FromKeys({std::string(32, 'b'), std::string(32, 'a')});
  ASSERT_TRUE(rotated_keys.ok());
  PgRolloutStore rotated(pool_.get(), rotated_keys->get());
  auto moved = rotated.SealStoredSecrets();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2);
  auto only_new = Box('b');
  PgRolloutStore after(pool_.get(), only_new.get());
  ExpectReadsBack(&after, "old");
}

TEST(SecretBoxTest, SealedValuesOpenOnlyUnderTheirKeyAndATamperedOneIsRefused) {
  auto box = Box('x');
  const std::string token = box->Seal(kSecret);
  EXPECT_TRUE(SecretBox::IsSealed(token));
  EXPECT_THAT(token, Not(HasSubstr(kSecret)));
  EXPECT_NE(box->Seal(kSecret), token) << "a fresh nonce each time";
  auto opened = box->Open(token);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, kSecret);
  EXPECT_TRUE(absl::IsFailedPrecondition(Box('y')->Open(token).status()));
  std::string tampered = token;
  tampered[tampered.size() - 6] = tampered[tampered.size() - 6] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(box->Open(tampered).ok());
  EXPECT_EQ(box->Fingerprint("a"), box->Fingerprint("a"));
  EXPECT_NE(box->Fingerprint("a"), box->Fingerprint("b"));
  EXPECT_NE(box->Fingerprint("a"), Box('y')->Fingerprint("a"));
}

}  // namespace
}  // namespace hoist::testing

namespace hoist::testing {
namespace {

TEST(SecretBoxFileTest, TheKeyFileMustBeHoistdsAloneAndEachLineAKey) {
  auto dir = MakeOwnedTempDir("hoist-secrets-key");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/secrets.key";
  std::ofstream(path) << "# current\n" << std::string(64, 'a') << "\n" << std::string(64, 'b') << "  # old\n";
  chmod(path.c_str(), 0644);
  auto open = SecretBox::FromFile(path);
  EXPECT_TRUE(absl::IsFailedPrecondition(open.status()));
  EXPECT_THAT(std::string(open.status().message()), HasSubstr("chmod 600"));
  chmod(path.c_str(), 0600);
  auto box = SecretBox::FromFile(path);
  ASSERT_TRUE(box.ok()) << box.status();
  auto old = SecretBox::FromKeys({std::string(32, '\xbb')});
  ASSERT_TRUE(old.ok());
  auto opened = (*box)->Open((*old)->Seal("v"));
  ASSERT_TRUE(opened.ok()) << "the second line still opens: " << opened.status();
  EXPECT_TRUE((*box)->SealedUnderOldKey((*old)->Seal("v")));
  std::ofstream(path) << "not-a-key\n";
  auto bad = SecretBox::FromFile(path);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path + ":1"));
  RemoveTree(*dir);
}

}  // namespace
}  // namespace hoist::testing
