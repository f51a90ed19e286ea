-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: 10.64.0.0    Database: wikidatawiki
-- ------------------------------------------------------
-- Server version	10.6.20-MariaDB-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `wb_items_per_site`
--

DROP TABLE IF EXISTS `wb_items_per_site`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
CREATE TABLE `wb_items_per_site` (
  `ips_row_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `ips_item_id` int(10) unsigned NOT NULL,
  `ips_site_id` varbinary(32) NOT NULL,
  `ips_site_page` varbinary(310) NOT NULL,
  PRIMARY KEY (`ips_row_id`),
  UNIQUE KEY `wb_ips_item_site_page` (`ips_site_id`,`ips_site_page`),
  KEY `wb_ips_item_id` (`ips_item_id`)
) ENGINE=InnoDB AUTO_INCREMENT=110 DEFAULT CHARSET=binary;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `wb_items_per_site`
--

LOCK TABLES `wb_items_per_site` WRITE;
/*!40000 ALTER TABLE `wb_items_per_site` DISABLE KEYS */;
INSERT INTO `wb_items_per_site` VALUES (1,19828155,'enwikiquote','Berlin'),(2,19828155,'simplewiki','Berlin'),(3,19828155,'zh_yuewiki','柏林'),(4,19828155,'dewikivoyage','Berlin'),(5,19828155,'jawikinews','ベルリン'),(6,64,'enwiki','Berlin'),(7,64,'jawiki','ベルリン'),(8,64,'thwiki','เบอร์ลิน'),(9,64,'arwiki','برلين'),(10,64,'hiwiki','बर्लिन'),(11,64,'dewiki','Berlin'),(12,64,'frwiki','Berlin'),(13,64,'bgwiki','Берлин'),(14,64,'zhwiki','柏林'),(15,64,'eswiki','Berlín'),(16,64,'zh_yuewiki','柏林'),(17,64,'simplewiki','Berlin'),(18,64,'enwikivoyage','Berlin'),(19,64,'commonswiki','Berlin'),(20,183,'enwiki','Germany'),(21,183,'jawiki','ドイツ'),(22,183,'thwiki','ประเทศเยอรมนี'),(23,183,'arwiki','ألمانيا'),(24,183,'hiwiki','जर्मनी'),(25,183,'dewiki','Deutschland'),(26,183,'frwiki','Allemagne'),(27,183,'bgwiki','Германия'),(28,183,'gdwiki','A\' Ghearmailt'),(29,183,'zhwiki','德国'),(30,183,'ruwiki','Германия'),(31,183,'enwikiquote','Germany'),(32,183,'commonswiki','Deutschland'),(33,1490,'enwiki','Tokyo'),(34,1490,'jawiki','東京都'),(35,1490,'thwiki','โตเกียว'),(36,1490,'arwiki','طوكيو'),(37,1490,'hiwiki','टोक्यो'),(38,1490,'dewiki','Tokio'),(39,1490,'frwiki','Tokyo'),(40,1490,'bgwiki','Токио'),(41,1490,'kowiki','도쿄도'),(42,1490,'zh_yuewiki','東京都'),(43,17,'enwiki','Japan'),(44,17,'jawiki','日本'),(45,17,'thwiki','ประเทศญี่ปุ่น'),(46,17,'arwiki','اليابان'),(47,17,'hiwiki','जापान'),(48,17,'dewiki','Japan'),(49,17,'frwiki','Japon'),(50,17,'bgwiki','Япония'),(51,17,'zhwiki','日本'),(52,17,'enwikivoyage','Japan'),(53,90,'enwiki','Paris'),(54,90,'jawiki','パリ'),(55,90,'thwiki','ปารีส'),(56,90,'arwiki','باريس'),(57,90,'hiwiki','पेरिस'),(58,90,'dewiki','Paris'),(59,90,'frwiki','Paris'),(60,90,'bgwiki','Париж');
INSERT INTO `wb_items_per_site` VALUES (61,90,'itwiki','Parigi'),(62,90,'simplewiki','Paris'),(63,90,'frwikiquote','Paris'),(64,142,'enwiki','France'),(65,142,'jawiki','フランス'),(66,142,'thwiki','ประเทศฝรั่งเศส'),(67,142,'arwiki','فرنسا'),(68,142,'hiwiki','फ़्रान्स'),(69,142,'dewiki','Frankreich'),(70,142,'frwiki','France'),(71,142,'bgwiki','Франция'),(72,142,'eswiki','Francia'),(73,84,'enwiki','London'),(74,84,'jawiki','ロンドン_'),(75,84,'thwiki','ลอนดอน'),(76,84,'arwiki','لندن'),(77,84,'hiwiki','लंदन'),(78,84,'dewiki','London'),(79,84,'frwiki','Londres'),(80,84,'bgwiki','Лондон'),(81,84,'nlwiki','Londen'),(82,84,'enwikinews','Category:London'),(83,145,'enwiki','United_Kingdom'),(84,145,'jawiki','イギリス'),(85,145,'thwiki','สหราชอาณาจักร'),(86,145,'arwiki','المملكة المتحدة'),(87,145,'hiwiki','यूनाइटेड किंगडम'),(88,145,'dewiki','Vereinigtes Königreich'),(89,145,'frwiki','Royaume-Uni'),(90,145,'bgwiki','Обединено кралство'),(91,145,'plwiki','Wielka Brytania'),(92,46,'enwiki','Europe'),(93,46,'jawiki','ヨーロッパ'),(94,46,'thwiki','ทวีปยุโรป'),(95,46,'arwiki','أوروبا'),(96,46,'hiwiki','यूरोप'),(97,46,'dewiki','Europa'),(98,46,'frwiki','Europe'),(99,46,'bgwiki','Европа'),(100,46,'fiwiki','Eurooppa'),(101,5119,'enwiki','Capital city'),(102,5119,'jawiki','首都'),(103,5119,'thwiki','เมืองหลวง'),(104,5119,'arwiki','عاصمة'),(105,5119,'hiwiki','राजधानी'),(106,5119,'dewiki','Hauptstadt'),(107,5119,'frwiki','capitale'),(108,5119,'bgwiki','Столица'),(109,5119,'svwiki','Huvudstad');
/*!40000 ALTER TABLE `wb_items_per_site` ENABLE KEYS */;
UNLOCK TABLES;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2024-05-01 12:00:00
